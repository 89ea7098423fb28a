"""Activation normalization as SAELens does it, folded into the SAE on export.

SAEs train better on activations scaled to a fixed norm: SAELens scales
them so the mean squared norm equals `input_dim`. The scale is estimated
once from a sample. Training then happens on `scale * x`; for use on raw
activations the scale is folded into the weights, so the exported SAE
gives `x_hat_raw = sae(scale * x) / scale` with no extra layer.
"""

import numpy as np

from gated_sae_layers._validation import check_activations, check_positive_int


def estimate_norm_scale(data, sample_rows=65536, seed=0):
    """`sqrt(input_dim / E||x||^2)` over a sample of `data` (array or `ActivationStore`).

    Raises:
        ValueError: no rows, NaN or Inf in the sample, or no finite positive
            scale (all-zero or vanishingly small activations).
    """
    sample_rows = check_positive_int(sample_rows, "sample_rows")
    if hasattr(data, "read_shard"):
        sample = _store_sample(data, sample_rows, seed)
    else:
        sample = np.asarray(check_activations(data, None, "data"), "float64")
    if len(sample) > sample_rows:
        sample = sample[np.random.default_rng(seed).choice(len(sample), sample_rows,
                                                            replace=False)]
    mean_squared_norm = float((sample ** 2).sum(axis=1).mean())
    if mean_squared_norm == 0:
        raise ValueError("The activations are all zero; no scale normalizes them.")
    with np.errstate(divide="ignore", over="ignore"):
        scale = float(np.sqrt(sample.shape[1] / mean_squared_norm))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"The activations' mean squared norm is {mean_squared_norm:g}: no finite "
            f"scale > 0 normalizes them. Received: scale={scale}")
    return scale


def _store_sample(store, sample_rows, seed):
    """At least `sample_rows` rows (or all) of whole shards in random order."""
    if not store.num_rows:
        raise ValueError(
            f"`data` has no rows: the store at {store.path} is empty. Harvest into "
            "it first.")
    order = np.random.default_rng(seed).permutation(store.num_shards)
    parts, taken = [], 0
    for index in order:
        parts.append(np.asarray(store.read_shard(int(index)), "float64"))
        taken += len(parts[-1])
        if taken >= sample_rows:
            break
    sample = np.concatenate(parts)
    if not np.isfinite(sample).all():
        raise ValueError(
            f"The store at {store.path} holds NaN or Inf (in a float16 store, values "
            "beyond 65504 written before this was checked): no scale normalizes them. "
            'Re-harvest with dtype="float32", or normalize the activations first.')
    return sample


def __getattr__(name):
    # `fold_normalization` transforms a model, so it lives with the models
    # (`models/folding.py`); this name, where it was first, still works,
    # imported lazily so that this package stays below the models.
    if name == "fold_normalization":
        from gated_sae_layers.models.folding import fold_normalization

        return fold_normalization
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["estimate_norm_scale"]
