"""Analysis of a trained SAE: sparsity, dead latents, shrinkage, sharpness.

These take a trained model (`build_gated_sae`, `GatedSAE`, or any
`SparseAutoencoder` with `latents` and `reconstruction` outputs) and data
(an array, or an `ActivationStore`), and return plain numpy/Python values.
`sparsity_report`, `decoder_sharpness`, `feature_density` and
`relative_reconstruction_bias` are also `gsl.*`; the module is `gsl.evaluation.analysis`.
"""

import numpy as np
from keras import ops

from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.activations import rows as activation_rows
from gated_sae_layers.metrics import RelativeReconstructionBias


def _batches(model, x, batch_size):
    """Yields `(x_batch, outputs)` with the model's outputs as numpy arrays."""
    batch_size = check_positive_int(batch_size, "batch_size")
    x, _ = activation_rows.check_rows(x, model.input_dim, "X")
    for batch in activation_rows.row_batches(x, batch_size):
        outputs = model.predict_on_batch(batch)
        yield batch, {k: np.asarray(v) for k, v in outputs.items()}


def encode_all(model, x, batch_size=512):
    """The latents of every row of `x`, shape `(num_examples, latent_dim)`
    (`model.encode`)."""
    return model.encode(x, batch_size=batch_size)


def sparsity_report(model, X, batch_size=512, k=20):
    """How sparse and how alive the latents are on `X` (the `gated-sae-tf` keys).

    Args:
        model: a trained SAE.
        X: `(num_examples, input_dim)` float activations.
        batch_size: rows encoded at a time.
        k: the number of top latents for `topk_share`.

    Returns:
        A dict: `l0_mean`, `l0_median` (active latents per example), `alive`,
        `dead` (latents that fired / never fired on `X`), `n_features`,
        `alive_frac`, `topk` and `topk_share` (the share of the total
        activation mass carried by the `k` latents of largest mean).
    """
    k = check_positive_int(k, "k")
    n_features = model.latent_dim
    l0, activation_sum = [], np.zeros(n_features, "float64")
    fire_counts = np.zeros(n_features, "int64")
    for _, out in _batches(model, X, batch_size):
        active = out["latents"] > 0
        l0.append(active.sum(axis=1))
        fire_counts += active.sum(axis=0)
        activation_sum += out["latents"].sum(axis=0, dtype="float64")
    l0 = np.concatenate(l0)
    alive = int((fire_counts > 0).sum())
    top = np.sort(activation_sum)[::-1]
    total = top.sum()
    topk = min(k, n_features)
    return {
        "l0_mean": float(l0.mean()),
        "l0_median": float(np.median(l0)),
        "alive": alive,
        "dead": n_features - alive,
        "n_features": n_features,
        "alive_frac": alive / n_features,
        "topk": topk,
        "topk_share": float(top[:topk].sum() / total) if total > 0 else 0.0,
    }


def feature_density(model, X, batch_size=512):
    """The fraction of examples of `X` on which each latent fires.

    Returns:
        `(latent_dim,)` float64 array in [0, 1]. A histogram of its log10
        (`plot_feature_density`) is the usual SAE health check: dead latents
        sit at 0, dense ones near 1.
    """
    counts = np.zeros(model.latent_dim, "int64")
    rows = 0
    for batch, out in _batches(model, X, batch_size):
        counts += (out["latents"] > 0).sum(axis=0)
        rows += batch.shape[0]
    return counts / rows


def relative_reconstruction_bias(model, X, batch_size=512):
    """Shrinkage `gamma = E||x_hat||^2 / E[x_hat . x]` on `X` (1 = unbiased).

    See `RelativeReconstructionBias`; Rajamanoharan et al. 2024, sec. 5.2.
    """
    metric = RelativeReconstructionBias()
    for batch, out in _batches(model, X, batch_size):
        metric.update_state(batch, out["reconstruction"])
    return float(ops.convert_to_numpy(metric.result()))


def fraction_of_variance_unexplained(model, X, batch_size=512):
    """`sum ||x - x_hat||^2 / sum ||x - mean(x)||^2` over `X`, in float64
    (`activations.rows.FidelitySums`; NaN when `X` has no variance)."""
    sums = activation_rows.FidelitySums(model.input_dim, model.latent_dim)
    for batch, out in _batches(model, X, batch_size):
        sums.update(batch, out["latents"], np.asarray(out["reconstruction"], "float64"))
    return sums.fvu()


def decoder_sharpness(model):
    """Excess (Fisher) kurtosis of each decoder row, and its mean.

    Higher kurtosis means a row concentrates its weight on few input
    dimensions (a sharper, more localized feature). Equals
    `scipy.stats.kurtosis(W_dec, axis=1)` (Fisher, biased); constant rows
    get 0.

    Returns:
        `(per_feature, mean)`: a `(latent_dim,)` array and a float.
    """
    weights = np.asarray(ops.convert_to_numpy(model.decoder.kernel), "float64")
    centered = weights - weights.mean(axis=1, keepdims=True)
    m2 = (centered ** 2).mean(axis=1)
    m4 = (centered ** 4).mean(axis=1)
    safe = np.where(m2 > 0, m2, 1.0)
    per_feature = np.where(m2 > 0, m4 / safe ** 2 - 3.0, 0.0)
    return per_feature, float(per_feature.mean())
