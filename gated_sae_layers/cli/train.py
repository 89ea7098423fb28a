"""`gated-sae train`: a gated SAE (or `--architecture`) from a store, by default to ~2% L0.

Its options and early checks are in `gated_sae_layers_cli.train`. Unless
a fixed `--sparsity-coefficient` is given alone, `gsl.TargetL0` steers the
coefficient to `--target-l0` (default: 2% of `--latent-dim`); the sparsity
warm-up (`gsl.SparsityWarmup`, the first 10% of the steps) runs first and
the steering starts when it ends. An L0 that ends far from the target
(the run was too short to steer it there) is reported on stderr. A TopK,
BatchTopK or Matryoshka SAE keeps `--k` latents per row (default: the
target L0) and has neither.
"""

import json
import sys

import keras
import numpy as np

import gated_sae_layers as gsl
from gated_sae_layers.activations import ActivationStore, store_dataset
from gated_sae_layers.activations.normalization import estimate_center, estimate_norm_scale
from gated_sae_layers_cli.options import import_modules
from gated_sae_layers_cli.outputs import replacing_file
from gated_sae_layers_cli.train import (
    K_ARCHITECTURES, check_train, default_epochs, default_target_l0)


def _built(args, input_dim, target, coefficient):
    """The SAE `args` ask for, by its architecture record (`gsl.build_sae`)."""
    options = {}
    if args.aux_coefficient is not None:
        options["aux_coefficient"] = args.aux_coefficient
    if args.architecture in K_ARCHITECTURES:
        options["k"] = args.k or round(target)
    else:
        options["sparsity_coefficient"] = coefficient
    return gsl.build_sae(args.architecture, input_dim, args.latent_dim, **options)


def run_train(args):
    """Runs `gated-sae train` for parsed `args`; returns the printed dict."""
    check_train(args)
    import_modules(args.imports)
    store = ActivationStore.open(args.store)
    if not store.num_rows:
        raise ValueError(
            f"The store at {args.store} has no rows: nothing to train on. Harvest into "
            "it first.")
    fixed_k = args.architecture in K_ARCHITECTURES
    target = args.target_l0
    if target is None and args.sparsity_coefficient is None and not args.k:
        target = default_target_l0(args.latent_dim)
    coefficient = 1.0 if args.sparsity_coefficient is None else args.sparsity_coefficient
    scale = estimate_norm_scale(store) if args.normalize else 1.0
    model = _built(args, store.input_dim, target, coefficient)
    k = model.encoder.k if fixed_k else None
    # b_dec at the geometric median of the scaled rows (the median commutes
    # with the scale).
    model.decoder.bias.assign(
        estimate_center(store, sample_rows=8192, seed=args.seed) * scale)
    dataset = store_dataset(store, args.batch_size, seed=args.seed).map(lambda x: x * scale)
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
    if fixed_k:
        report.update(k=k)
    else:
        report.setdefault("sparsity_coefficient", coefficient)
        report.update(target_l0=target)
    report.update(architecture=args.architecture, out=str(args.out),
                  normalization_scale=scale, rows=store.num_rows, steps=steps)
    print(json.dumps(report))
    l0 = report.get("l0")
    if (not fixed_k and target is not None and l0 is not None
            and not target / 1.5 <= l0 <= 1.5 * target):
        print(f"gated-sae: warning: L0 ended at {l0:.3g}, not near --target-l0 "
              f"{target:g}: the steering needs more steps ({steps} now). Train longer "
              "(more --epochs, or a smaller --batch-size).", file=sys.stderr)
    return report
