"""Shared pieces of the SAE-variant benchmarks (`ground_truth.py`, `pareto.py`).

* `build(architecture, input_dim, latent_dim, **kwargs)`: the variants' one
  entry point, `gated_sae_layers.models.variants.build_sae`. If that module
  is missing (or cannot be imported), only "gated" is available, mapped to
  `gsl.build_gated_sae`.
* `train(...)`: one SAE at a fixed training budget (steps, batch size,
  Adam(beta_1=0) with linear warm-up + cosine decay, sparsity warm-up for the
  variants that have a `SparsityPenalty`), identical for every variant.
* `evaluate(model, x)`: L0, dead latents, FVU and shrinkage on held-out rows.
* `machine_info()`: nproc, CPU model, memory, date, versions (for RESULTS.md).
"""

import datetime
import os
import platform
import subprocess
import time

import keras
import numpy as np

import gated_sae_layers as gsl
from gated_sae_layers import analysis

ALL_ARCHITECTURES = ("gated", "relu", "topk", "batch_topk", "jumprelu", "matryoshka")
PENALTY_ARCHITECTURES = ("gated", "relu", "jumprelu")   # take sparsity_coefficient=
K_ARCHITECTURES = ("topk", "batch_topk", "matryoshka")  # take k=

_VARIANTS_ERROR = None
try:  # the other engineer's module; may not exist yet
    from gated_sae_layers.models.variants import build_sae as _build_sae
except Exception as error:  # noqa: BLE001 - any failure means "not available"
    _build_sae = None
    _VARIANTS_ERROR = f"{type(error).__name__}: {error}"


def variants_available():
    """The architectures this checkout can build."""
    return ALL_ARCHITECTURES if _build_sae is not None else ("gated",)


def variants_status():
    if _build_sae is not None:
        return "gated_sae_layers.models.variants.build_sae"
    return f"fallback (gated only; variants import failed: {_VARIANTS_ERROR})"


def build(architecture, input_dim, latent_dim, **kwargs):
    """`build_sae(architecture, input_dim, latent_dim, **kwargs)`, or the fallback."""
    if _build_sae is not None:
        return _build_sae(architecture, input_dim, latent_dim, **kwargs)
    if architecture != "gated":
        raise RuntimeError(
            f"architecture {architecture!r} needs gated_sae_layers.models.variants "
            f"({_VARIANTS_ERROR})")
    return gsl.build_gated_sae(input_dim, latent_dim, **kwargs)


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


def has_sparsity_penalty(model):
    from gated_sae_layers.callbacks import find_sparsity_penalties

    try:
        return bool(find_sparsity_penalties(model))
    except Exception:  # noqa: BLE001
        return False


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
    keras.utils.set_random_seed(seed)
    input_dim = x_train.shape[1]
    builder_kwargs = dict(builder_kwargs or {})
    if architecture in K_ARCHITECTURES:
        # Gao et al. 2024 use k_aux ~ d_model / 2 (512 for d_model 768).
        builder_kwargs.setdefault("k_aux", max(1, min(input_dim // 2, latent_dim)))
    model = build(architecture, input_dim, latent_dim,
                  **hyper_kwargs(architecture, hyper, latent_dim),
                  **builder_kwargs)
    model.decoder.bias.assign(x_train.mean(axis=0).astype("float32"))
    schedule = gsl.WarmupCosineDecay(
        peak_lr, warmup_steps=max(int(steps * warmup_fraction), 1),
        total_steps=steps + 1)
    model.compile(optimizer=keras.optimizers.Adam(schedule, beta_1=0.0),
                  jit_compile=True)
    callbacks = []
    if has_sparsity_penalty(model):
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
    sparsity = gsl.sparsity_report(model, x)
    return {
        "l0": sparsity["l0_mean"],
        "dead": int(sparsity["dead"]),
        "fvu": float(analysis.fraction_of_variance_unexplained(model, x)),
        "shrinkage": float(gsl.relative_reconstruction_bias(model, x)),
    }


def _run(command):
    try:
        return subprocess.run(command, shell=True, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def machine_info():
    model_name = _run("lscpu | grep 'Model name' | sed 's/.*: *//'") or platform.processor()
    mem_kb = 0
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    try:
        import tensorflow as tf

        tf_version = tf.__version__
    except ImportError:
        tf_version = None
    return {
        "nproc": os.cpu_count(),
        "cpu": model_name,
        "memory_gib": round(mem_kb / 2**20, 1),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "tensorflow": tf_version,
        "variants": variants_status(),
    }


def markdown_table(rows, columns):
    """`columns`: list of (header, key, format) with format a format spec or callable."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    for row in rows:
        cells = []
        for _, key, fmt in columns:
            value = row.get(key)
            if value is None:
                cells.append("")
            elif callable(fmt):
                cells.append(fmt(value))
            else:
                cells.append(format(value, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_grid(text):
    """`"gated=1,2;relu=0.5"` -> `{"gated": [1.0, 2.0], "relu": [0.5]}`."""
    grid = {}
    for item in text.split(";"):
        if item.strip():
            name, values = item.split("=")
            grid[name.strip()] = [float(v) for v in values.split(",")]
    return grid
