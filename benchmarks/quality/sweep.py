"""Every SAE variant at one training budget, over a grid of its sparsity knob.

Shared by `ground_truth` and `pareto` (and `docs/scripts/evaluation_demo.py`):

* `train(architecture, x_train, latent_dim, hyper, ...)`: one SAE built by
  `gsl.build_sae` and trained for exactly `steps` optimizer steps (batch
  size, Adam(beta_1=0) with linear warm-up + cosine decay, a sparsity
  warm-up for the variants with a sparsity term), identical for every
  variant; only `hyper`, a coefficient or a k, differs.
* `evaluate(model, x)`: L0, dead latents, FVU and shrinkage on held-out rows.
* `sweep(...)`: `train` + `evaluate` (+ a benchmark's own `score`) at every
  grid point, one row each; a failure becomes a row with `error`.
* `add_sweep_arguments(parser, ...)`, `parse_grid`, `parse_architectures`,
  `print_failures`, `replot`: the command-line pieces both scripts share.

Example:

    >>> parse_grid("gated=1,2;topk=5")
    {'gated': [1.0, 2.0], 'topk': [5.0]}
    >>> hyper_kwargs("matryoshka", 8, latent_dim=64)
    {'k': 8, 'prefix_sizes': [4, 16, 64]}
"""

import json
import pathlib
import time

import numpy as np

from benchmarks.common import write_json

ALL_ARCHITECTURES = ("gated", "relu", "topk", "batch_topk", "jumprelu", "matryoshka")
PENALTY_ARCHITECTURES = ("gated", "relu", "jumprelu")   # take sparsity_coefficient=
K_ARCHITECTURES = ("topk", "batch_topk", "matryoshka")  # take k=


def knob(architecture):
    """`"k"` for the k-budget variants, `"lambda"` for the penalty ones."""
    return "k" if architecture in K_ARCHITECTURES else "lambda"


def hyper_kwargs(architecture, value, latent_dim=None, prefix_fractions=None):
    """The keyword arguments of one sweep point: a coefficient or a k."""
    if architecture in PENALTY_ARCHITECTURES:
        return {"sparsity_coefficient": float(value)}
    kwargs = {"k": int(value)}
    if architecture == "matryoshka":
        fractions = prefix_fractions or (1 / 16, 1 / 4, 1.0)
        sizes = sorted({max(1, int(round(f * latent_dim))) for f in fractions})
        sizes[-1] = latent_dim
        kwargs["prefix_sizes"] = sizes
    return kwargs


def train(architecture, x_train, latent_dim, hyper, *, steps, batch_size,
          peak_lr, seed=0, warmup_fraction=0.05, sparsity_warmup_fraction=0.1,
          verbose=0, builder_kwargs=None):
    """Trains one SAE for exactly `steps` optimizer steps; returns (model, seconds).

    The budget is the same for every architecture: the same data, rows,
    steps, batch size, optimizer and learning-rate schedule. Only the
    sparsity knob (`hyper`: a coefficient or a k) differs. The k-budget
    variants get `k_aux = input_dim // 2` (Gao et al.'s d_model / 2) unless
    `builder_kwargs` says otherwise.
    """
    import keras

    import gated_sae_layers as gsl

    keras.utils.set_random_seed(seed)
    input_dim = x_train.shape[1]
    builder_kwargs = dict(builder_kwargs or {})
    if architecture in K_ARCHITECTURES:
        # Gao et al. 2024 use k_aux ~ d_model / 2 (512 for d_model 768).
        builder_kwargs.setdefault("k_aux", max(1, min(input_dim // 2, latent_dim)))
    model = gsl.build_sae(architecture, input_dim, latent_dim,
                          **hyper_kwargs(architecture, hyper, latent_dim),
                          **builder_kwargs)
    model.decoder.bias.assign(x_train.mean(axis=0).astype("float32"))
    schedule = gsl.WarmupCosineDecay(
        peak_lr, warmup_steps=max(int(steps * warmup_fraction), 1),
        total_steps=steps + 1)
    model.compile(optimizer=keras.optimizers.Adam(schedule, beta_1=0.0),
                  jit_compile=True)
    callbacks = []
    if model.sparsity_penalties():
        callbacks.append(gsl.SparsityWarmup(
            steps=max(int(steps * sparsity_warmup_fraction), 1)))
    # Exactly `steps` steps: whole epochs over a shuffled copy that is long enough.
    rng = np.random.default_rng(seed)
    rows_needed = steps * batch_size
    reps = int(np.ceil(rows_needed / len(x_train)))
    order = np.concatenate([rng.permutation(len(x_train)) for _ in range(reps)])
    data = x_train[order[:rows_needed]]
    start = time.perf_counter()
    model.fit(data, epochs=1, batch_size=batch_size, shuffle=False,
              verbose=verbose, callbacks=callbacks)
    return model, time.perf_counter() - start


def evaluate(model, x):
    """Held-out L0, dead latents, FVU and shrinkage (relative reconstruction bias)."""
    import gated_sae_layers as gsl
    from gated_sae_layers.evaluation import analysis

    sparsity = gsl.sparsity_report(model, x)
    return {
        "l0": sparsity["l0_mean"],
        "dead": int(sparsity["dead"]),
        "fvu": float(analysis.fraction_of_variance_unexplained(model, x)),
        "shrinkage": float(gsl.relative_reconstruction_bias(model, x)),
    }


def sweep(grid, x_train, x_test, latent_dim, *, score, summary, partial_path,
          builder_kwargs, **train_kwargs):
    """Trains and scores every point of `grid` (`{architecture: [values]}`).

    `score(model)` adds a benchmark's own metrics to the row; `summary(row)`
    is the progress line of a trained row. After every point the rows so far
    go to `partial_path`. Returns the rows: `architecture`, `knob`, `hyper`,
    `train_seconds`, `evaluate`'s metrics, `score`'s, or `error`.
    """
    rows = []
    for architecture, values in grid.items():
        for value in values:
            hyper = int(value) if architecture in K_ARCHITECTURES else float(value)
            row = {"architecture": architecture, "knob": knob(architecture),
                   "hyper": hyper}
            try:
                model, seconds = train(architecture, x_train, latent_dim, hyper,
                                       builder_kwargs=builder_kwargs.get(architecture),
                                       **train_kwargs)
                row["train_seconds"] = round(seconds, 1)
                row.update(evaluate(model, x_test))
                row.update(score(model))
            except Exception as error:  # noqa: BLE001 - report and go on
                row["error"] = f"{type(error).__name__}: {error}"[:300]
            rows.append(row)
            write_json(partial_path, rows, indent=1)
            print(f"  {architecture:<11} {row['knob']}={hyper}: "
                  + (row.get("error") or summary(row)), flush=True)
    return rows


def print_failures(rows):
    for r in rows:
        if "error" in r:
            print(f"\nFAILED {r['architecture']} {r['knob']}={r['hyper']}: {r['error']}")


# ---------------------------------------------------------- command line
def parse_grid(text):
    """`"gated=1,2;relu=0.5"` -> `{"gated": [1.0, 2.0], "relu": [0.5]}`."""
    grid = {}
    for item in text.split(";"):
        if item.strip():
            name, values = item.split("=")
            grid[name.strip()] = [float(v) for v in values.split(",")]
    return grid


def parse_architectures(text, parser):
    """The names in `--architectures`; an unknown one is a usage error."""
    names = [a for a in text.split(",") if a]
    unknown = [a for a in names if a not in ALL_ARCHITECTURES]
    if unknown:
        parser.error(f"--architectures takes names from {', '.join(ALL_ARCHITECTURES)}. "
                     f"Received: {','.join(unknown)}")
    return names


def add_sweep_arguments(parser, jumprelu_bandwidth, jumprelu_threshold):
    """`--architectures`, `--grid`, `--jumprelu-*`, `--seed`, `--tag`, `--replot`.

    `jumprelu_bandwidth`, `jumprelu_threshold`: `(default, help)` pairs.
    """
    parser.add_argument("--architectures", default=",".join(ALL_ARCHITECTURES))
    parser.add_argument("--grid", default="",
                        help='override, e.g. "gated=1,2;relu=0.5;topk=5"')
    parser.add_argument("--jumprelu-bandwidth", type=float,
                        default=jumprelu_bandwidth[0], help=jumprelu_bandwidth[1])
    parser.add_argument("--jumprelu-threshold", type=float,
                        default=jumprelu_threshold[0], help=jumprelu_threshold[1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default=None, help="output file stem suffix")
    parser.add_argument("--replot", metavar="JSON",
                        help="only redraw the PNG beside an earlier run's JSON")


def replot(path, plot):
    """Redraws the PNG beside an earlier run's JSON with `plot(results, png)`."""
    results = json.loads(pathlib.Path(path).read_text())
    png = pathlib.Path(path).with_suffix(".png")
    plot(results, png)
    print(f"figure: {png}")
    return results
