"""Statistics of the activations estimated once from a sample: scale and center.

SAEs train better on activations scaled to a fixed norm: SAELens scales
them so the mean squared norm equals `input_dim` (`estimate_norm_scale`).
Training then happens on `scale * x`; for use on raw activations the scale
is folded into the weights, so the exported SAE gives
`x_hat_raw = sae(scale * x) / scale` with no extra layer.

They also train better with the decoder bias `b_dec` started at the center
of the data (`estimate_center`: the mean, or the geometric median as in
Bricken et al. 2023 and dictionary_learning), so that `x - b_dec` starts
centered.
"""

import numpy as np

from gated_sae_layers._validation import check_activations, check_positive_int


def estimate_norm_scale(data, sample_rows=65536, seed=0):
    """`sqrt(input_dim / E||x||^2)` over a sample of `data` (array or `ActivationStore`).

    Raises:
        ValueError: no rows, NaN or Inf in the sample, or no finite positive
            scale (all-zero or vanishingly small activations).
    """
    sample = sample_activations(data, sample_rows, seed)
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


def sample_activations(data, sample_rows=65536, seed=0):
    """At most `sample_rows` random rows of `data` (array or `ActivationStore`),
    float64, checked: 2-D, floating, at least one row, no NaN/Inf."""
    sample_rows = check_positive_int(sample_rows, "sample_rows")
    if hasattr(data, "read_shard"):
        sample = _store_sample(data, sample_rows, seed)
    else:
        sample = np.asarray(check_activations(data, None, "data"), "float64")
    if len(sample) > sample_rows:
        sample = sample[np.random.default_rng(seed).choice(len(sample), sample_rows,
                                                            replace=False)]
    return sample


def geometric_median(points, max_iterations=200, tolerance=1e-9):
    """The point minimizing the sum of Euclidean distances to `points` (Weiszfeld).

    `argmin_m sum_i ||x_i - m||`, by the iteration
    `m <- sum_i w_i x_i / sum_i w_i` with `w_i = 1 / max(||x_i - m||, 1e-12)`,
    from the mean, in float64, until `m` moves by less than `tolerance`
    times its scale. Unlike the mean, outlying rows barely move it.

    Example:

    >>> import numpy as np
    >>> points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    >>> np.round(geometric_median(points), 3).tolist()
    [0.5, 0.5]
    """
    points = np.asarray(points, "float64")
    median = points.mean(axis=0)
    scale = max(float(np.abs(points).max()), 1e-12)
    for _ in range(max_iterations):
        distances = np.linalg.norm(points - median, axis=1)
        weights = 1.0 / np.maximum(distances, 1e-12)
        updated = weights @ points / weights.sum()
        moved = float(np.linalg.norm(updated - median))
        median = updated
        if moved <= tolerance * scale:
            break
    return median


def estimate_center(data, method="geometric_median", sample_rows=65536, seed=0):
    """The center of `data` (array or `ActivationStore`) for `b_dec`, `(input_dim,)`.

    Args:
        data: `(num_rows, input_dim)` floating activations, or a store.
        method: `"geometric_median"` (robust to outlying rows; default) or
            `"mean"`.
        sample_rows: int >= 1, at most this many random rows are used.
        seed: the sample's seed.

    Returns:
        A float32 numpy array of shape `(input_dim,)`.
    """
    if method not in ("geometric_median", "mean"):
        raise ValueError(
            "`method` must be 'geometric_median' or 'mean'. "
            f"Received: method={method!r}")
    sample = sample_activations(data, sample_rows, seed)
    center = geometric_median(sample) if method == "geometric_median" else (
        sample.mean(axis=0))
    return center.astype("float32")


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


__all__ = ["estimate_center", "estimate_norm_scale", "geometric_median",
           "sample_activations"]
