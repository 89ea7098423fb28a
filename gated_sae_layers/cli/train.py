"""`gated-sae train`: a gated SAE (or `--architecture`) from a store, by default to ~2% L0.

Its options and early checks are in `gated_sae_layers_cli.train`. Unless
a fixed `--sparsity-coefficient` is given alone, `gsl.TargetL0` steers the
coefficient to `--target-l0` (default: 2% of `--latent-dim`); the sparsity
warm-up (`gsl.SparsityWarmup`, the first 10% of the steps) runs first and
the steering starts when it ends. An L0 that ends far from the target
(the run was too short to steer it there) is reported on stderr. A TopK,
BatchTopK or Matryoshka SAE keeps `--k` latents per row (default: the
target L0) and has neither.

What is trained depends on the store (`Layout`):

| store | trains | `x` | `y` |
| --- | --- | --- | --- |
| no `roles` (one block or several) | an SAE (`gsl.build_sae`) | whole rows | `x` |
| `roles` (`harvest --target-layer`) | a transcoder (`gsl.build_transcoder`, `--skip`) | the `inputs` blocks | the `targets` blocks |
| `--crosscoder`, several blocks of one width | a crosscoder (`gsl.build_crosscoder`) | whole rows, one layer a block | `x` |

Rows are scaled by one factor (`estimate_norm_scale` over the columns
trained on: `x` and `y` together), so that `fold_normalization` folds it
exactly (a skip transcoder's `W_skip` is unchanged by a common scale);
`b_dec` starts at the geometric median of what the decoder writes (`y`
for a transcoder).
"""

import json
import sys

import keras
import numpy as np

import gated_sae_layers as gsl
from gated_sae_layers.activations import ActivationStore, paired_dataset, store_dataset
from gated_sae_layers.activations.normalization import (
    estimate_center, estimate_norm_scale, sample_activations)
from gated_sae_layers.models.learning_rates import DECODER_MULTIPLIER_START
from gated_sae_layers_cli.options import import_modules
from gated_sae_layers_cli.outputs import replacing_file
from gated_sae_layers_cli.train import (
    K_ARCHITECTURES, check_train, chosen_architecture, default_epochs, default_target_l0)


def _names(blocks):
    return [name for name, _, _ in blocks]


def _width(blocks):
    return sum(stop - start for _, start, stop in blocks)


class Layout:
    """What `train` reads from a store: `kind` (`"sae"`, `"transcoder"` or
    `"crosscoder"`), and the `(name, start, stop)` blocks of `x` (`inputs`)
    and, for a transcoder, of `y` (`targets`; `x` itself otherwise)."""

    def __init__(self, kind, inputs, targets=None):
        self.kind, self.inputs = kind, tuple(inputs)
        self.targets = self.inputs if targets is None else tuple(targets)
        self.input_dim, self.output_dim = _width(self.inputs), _width(self.targets)

    def target_columns(self):
        """The store columns of `y`, in order."""
        return np.concatenate([np.arange(start, stop) for _, start, stop in self.targets])

    def columns(self):
        """The store columns trained on: `x`'s, then (a transcoder) `y`'s."""
        blocks = self.inputs + (self.targets if self.kind == "transcoder" else ())
        return np.concatenate([np.arange(start, stop) for _, start, stop in blocks])


def store_layout(args, store):
    """The `Layout` of `store` for `args`: raises a `ValueError` for `--skip`
    on a store without roles, roles naming blocks the store does not hold,
    and `--crosscoder` on one block or on blocks of unequal widths."""
    blocks = store.blocks
    roles = store.metadata.get("roles")
    if args.crosscoder:
        widths = {name: stop - start for name, start, stop in blocks}
        if len(blocks) < 2 or len(set(widths.values())) != 1:
            raise ValueError(
                "`--crosscoder` reads every block of the store as one layer, so it needs "
                "two or more blocks of one width (harvest them with --layer repeated). "
                f"Received: the store at {args.store} with blocks {widths}")
        return Layout("crosscoder", blocks)
    if roles is None:
        if args.skip:
            raise ValueError(
                "`--skip` trains a skip transcoder, which needs a store whose metadata "
                "has roles: its input and target blocks (harvest with --layer and "
                f"--target-layer). Received: the store at {args.store}, blocks "
                f"{_names(blocks)} and no roles")
        return Layout("sae", [("rows", 0, store.input_dim)])
    by_name = {block[0]: block for block in blocks}
    chosen = {}
    for role in ("inputs", "targets"):
        names = roles.get(role) if isinstance(roles, dict) else None
        names = [names] if isinstance(names, str) else names
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) and n in by_name for n in names)):
            raise ValueError(
                f"The store's roles must name its blocks, {list(by_name)}, as "
                '{"inputs": [names], "targets": [names]} (each list not empty); '
                "re-harvest it with --layer and --target-layer. Received: the store at "
                f"{args.store} with roles={roles!r:.200}")
        chosen[role] = [by_name[name] for name in names]
    return Layout("transcoder", chosen["inputs"], chosen["targets"])


def _built(args, layout, target, coefficient, steps):
    """The model `args` ask for on `layout`, by its architecture record
    (`gsl.build_sae`, `gsl.build_transcoder`, `gsl.build_crosscoder`), for a
    run of `steps` optimizer steps."""
    architecture = chosen_architecture(args)
    options = {}
    if architecture == "gated" and layout.kind == "sae":
        start = args.decoder_lr_multiplier or DECODER_MULTIPLIER_START
        options["decoder_learning_rate_multiplier"] = (
            gsl.falling_multiplier(steps, start) if start > 1 else 1.0)
    if args.aux_coefficient is not None:
        options["aux_coefficient"] = args.aux_coefficient
    if architecture in K_ARCHITECTURES:
        options["k"] = args.k or round(target)
    else:
        options["sparsity_coefficient"] = coefficient
    if layout.kind == "transcoder":
        return gsl.build_transcoder(architecture, layout.input_dim, layout.output_dim,
                                    args.latent_dim, skip=args.skip, **options)
    if layout.kind == "crosscoder":
        return gsl.build_crosscoder(layout.input_dim // len(layout.inputs), len(layout.inputs),
                                    args.latent_dim, architecture=architecture, **options)
    return gsl.build_sae(architecture, layout.input_dim, args.latent_dim, **options)


def _scale_and_center(args, store, layout):
    """`(scale, b_dec)`: the common scale of the columns trained on, and the
    geometric median of the scaled rows the decoder writes (`y`, or `x`)."""
    if layout.kind != "transcoder":  # whole rows, as ever
        scale = estimate_norm_scale(store) if args.normalize else 1.0
        return scale, estimate_center(store, sample_rows=8192, seed=args.seed) * scale
    scale = (estimate_norm_scale(sample_activations(store)[:, layout.columns()])
             if args.normalize else 1.0)
    center = estimate_center(
        sample_activations(store, 8192, args.seed)[:, layout.target_columns()],
        sample_rows=8192, seed=args.seed)
    return scale, center * scale


def _dataset(args, store, layout, scale):
    """The scaled training batches: rows, or `(x, y)` pairs for a transcoder."""
    if layout.kind != "transcoder":
        return store_dataset(store, args.batch_size, seed=args.seed).map(lambda x: x * scale)
    pairs = paired_dataset(store, _names(layout.inputs), _names(layout.targets),
                           args.batch_size, seed=args.seed)
    return pairs.map(lambda x, y: (x * scale, y * scale))


def _trained(layout, model, args):
    """What the report says was trained: the kind and the widths."""
    trained = {"kind": layout.kind, "input_dim": model.input_dim,
               "output_dim": model.output_dim, "latent_dim": model.latent_dim}
    if layout.kind == "transcoder":
        trained.update(skip=args.skip, inputs=_names(layout.inputs),
                       targets=_names(layout.targets))
    elif layout.kind == "crosscoder":
        trained.update(num_layers=len(layout.inputs), layers=_names(layout.inputs))
    return trained


def run_train(args):
    """Runs `gated-sae train` for parsed `args`; returns the printed dict."""
    check_train(args)
    import_modules(args.imports)
    store = ActivationStore.open(args.store)
    if not store.num_rows:
        raise ValueError(
            f"The store at {args.store} has no rows: nothing to train on. Harvest into "
            "it first.")
    layout = store_layout(args, store)
    if layout.kind != "sae" and args.decoder_lr_multiplier is not None:
        raise ValueError(
            f"`--decoder-lr-multiplier` applies to gated SAEs; the store at {args.store} "
            f"has roles, so it trains a {layout.kind} (the multiplier was measured on "
            "SAEs only). Received: --decoder-lr-multiplier="
            f"{args.decoder_lr_multiplier:g}")
    architecture = chosen_architecture(args)
    fixed_k = architecture in K_ARCHITECTURES
    target = args.target_l0
    if target is None and args.sparsity_coefficient is None and not args.k:
        target = default_target_l0(args.latent_dim)
    coefficient = 1.0 if args.sparsity_coefficient is None else args.sparsity_coefficient
    scale, center = _scale_and_center(args, store, layout)
    dataset = _dataset(args, store, layout, scale)
    per_pass = int(np.ceil(store.num_rows / args.batch_size))
    if args.epochs:
        epochs, steps_per_epoch = args.epochs, None
        steps = epochs * per_pass
    else:
        # Passes enough for DEFAULT_STEPS steps, run as at most 10 logged
        # epochs of a repeated dataset (a small store would otherwise pay
        # Keras's per-epoch cost hundreds of times).
        passes = default_epochs(store.num_rows, args.batch_size)
        epochs = min(10, passes)
        steps_per_epoch = int(np.ceil(passes * per_pass / epochs))
        steps = epochs * steps_per_epoch
        dataset = dataset.repeat()
    if steps < 2:
        raise ValueError(
            f"Training needs at least 2 steps; {store.num_rows} rows in batches of "
            f"{args.batch_size} for {epochs} epoch(s) make {steps}. Lower --batch-size "
            "or raise --epochs.")
    model = _built(args, layout, target, coefficient, steps)
    k = model.encoder.k if fixed_k else None
    # b_dec at the geometric median of the scaled rows (the median commutes
    # with the scale).
    model.decoder.bias.assign(center)
    # Warm-up, the peak lr held, a linear decay over the last 20% (issue 10).
    model.compile(optimizer=keras.optimizers.Adam(
        gsl.WarmupStableDecay(args.lr, max(steps // 20, 1), steps), beta_1=0.0),
        jit_compile=True)
    callbacks = []
    if not fixed_k:
        callbacks.append(gsl.SparsityWarmup(max(steps // 10, 1)))
        if target is not None:
            callbacks.append(gsl.TargetL0(target))
    history = model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch,
                        verbose=0 if args.quiet else 2,
                        callbacks=callbacks, shuffle=False)  # the dataset shuffles
    model.normalization_scale = scale
    exported = gsl.fold_normalization(model) if scale != 1.0 else model
    with replacing_file(args.out, args.overwrite) as temporary:
        exported.save(temporary)
    report = {k: float(v[-1]) for k, v in history.history.items()}
    multiplier = model.architecture["arguments"].get("decoder_learning_rate_multiplier")
    if multiplier is not None:   # a gated SAE: the start of W_dec's falling multiplier
        report.update(decoder_lr_multiplier=multiplier if isinstance(multiplier, float)
                      else multiplier["config"]["initial_learning_rate"])
    if fixed_k:
        report.update(k=k)
    else:
        report.setdefault("sparsity_coefficient", coefficient)
        report.update(target_l0=target)
    report.update(architecture=architecture, out=str(args.out),
                  normalization_scale=scale, rows=store.num_rows, steps=steps,
                  **_trained(layout, model, args))
    print(json.dumps(report))
    l0 = report.get("l0")
    if (not fixed_k and target is not None and l0 is not None
            and not target / 1.5 <= l0 <= 1.5 * target):
        print(f"gated-sae: warning: L0 ended at {l0:.3g}, not near --target-l0 "
              f"{target:g}: the steering needs more steps ({steps} now). Train longer "
              "(more --epochs, or a smaller --batch-size).", file=sys.stderr)
    return report
