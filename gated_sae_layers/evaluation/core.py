"""SAEBench's "core" metrics of an SAE on activations: sparsity, fidelity, density."""

import numbers

import numpy as np
from keras import ops

from gated_sae_layers.activations import rows as activation_rows
from gated_sae_layers.evaluation.geometry import (
    encoder_decoder_cosine, max_decoder_cosine)

# Fixed log10 density bins, 0.25 decade wide from 1e-10 to 1, so histograms
# of different runs share their bins. A dead latent counts as density 1e-10
# (the first bin), as in SAELens's `log10(density + 1e-10)`.
DENSITY_FLOOR = 1e-10
DENSITY_BIN_EDGES = np.linspace(-10.0, 0.0, 41)


def density_histogram(feature_density):
    """Counts of latents per log10 firing-density bin.

    ```
    counts[b] = #{i : edges[b] <= log10(max(density_i, 1e-10)) < edges[b + 1]}
    ```

    with `edges = DENSITY_BIN_EDGES` (41 edges, -10 to 0 by 0.25; the last
    bin also holds density 1). Dead latents fall in the first bin.

    Args:
        feature_density: `(latent_dim,)` firing frequencies in `[0, 1]`.

    Returns:
        `(counts, edges)`: int64 `(40,)` counts summing to `latent_dim`, and
        the float64 `(41,)` edges.

    Example:

    >>> counts, edges = density_histogram([0.0, 0.01, 1.0])
    >>> int(counts.sum()), int(counts[0]), int(counts[-1])
    (3, 1, 1)
    """
    density = np.asarray(feature_density, "float64").reshape(-1)
    if not np.all((density >= 0) & (density <= 1)):
        raise ValueError(
            "`feature_density` must hold frequencies in [0, 1]. Received: values "
            f"from {density.min()} to {density.max()}")
    log_density = np.log10(np.maximum(density, DENSITY_FLOOR))
    counts, edges = np.histogram(log_density, bins=DENSITY_BIN_EDGES)
    return counts.astype("int64"), edges


def _check_threshold(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            0.0 <= float(value) <= 1.0):
        raise ValueError(
            "`dense_threshold` must be a firing frequency in [0, 1]. "
            f"Received: dense_threshold={value!r}")
    return float(value)


def _check_targets(model, x, targets):
    """`(x, targets)` checked: a transcoder needs in-memory targets, one per row
    of an in-memory `x`; an SAE takes none."""
    if targets is None:
        if getattr(model, "is_transcoder", False):
            raise ValueError(
                f"Model '{model.name}' is a transcoder: its fidelity compares its "
                f"predictions with the targets `y` ({model.output_dim} wide), not with "
                "the inputs `x`. Pass `targets=y`. Received: targets=None")
        return activation_rows.check_rows(x, model.input_dim)[0], None
    if not getattr(model, "is_transcoder", False):
        raise ValueError(
            "`targets` are for a transcoder (`build_transcoder`); an SAE is measured "
            "against its own inputs. Received: targets with an SAE")
    x, _ = activation_rows.check_rows(x, model.input_dim)
    targets, _ = activation_rows.check_rows(targets, model.output_dim, "targets")
    if not hasattr(x, "shape") or not hasattr(targets, "shape") or len(x) != len(targets):
        raise ValueError(
            "`x` and `targets` must be in-memory arrays with one target row per row "
            f"of x. Received: {type(x).__name__} and {type(targets).__name__}"
            + (f" of {len(x)} and {len(targets)} rows"
               if hasattr(x, "shape") and hasattr(targets, "shape") else ""))
    return x, targets


def core_metrics(model, x, batch_size=1024, dense_threshold=0.1, targets=None):
    """SAEBench's core metrics of `model` on the rows of `x`, streamed in batches.

    With `f` the latents and `x_hat` the reconstruction of each row `x`
    (`N` rows, `mean(x)` per feature over all rows), all sums in float64:

    ```
    l0                 = (1/N) sum_n #{i : f_i(x_n) > 0}
    fvu                = sum_n ||x_n - x_hat_n||^2 / sum_n ||x_n - mean(x)||^2
    explained_variance = 1 - fvu               (exactly; SAEBench's name)
    cosine_similarity  = (1/N) sum_n x_n . x_hat_n / (max(||x_n||, 1e-8) max(||x_hat_n||, 1e-8))
    shrinkage          = sum_n ||x_hat_n||^2 / sum_n x_hat_n . x_n   (0 if that is 0)
    feature_density_i  = (1/N) #{n : f_i(x_n) > 0}
    dead_fraction      = #{i : feature_density_i = 0} / latent_dim
    dense_fraction     = #{i : feature_density_i > dense_threshold} / latent_dim
    ```

    `shrinkage` is the relative reconstruction bias `gamma`
    (`evaluation.analysis.relative_reconstruction_bias`; Rajamanoharan et al. 2024,
    sec. 5.2): 1 is unbiased, below 1 shrunk toward 0. `fvu` is NaN when
    `x` has no variance (a single row, or identical rows). Only one batch of
    latents is in memory at a time; `x` may be an `ActivationStore`.

    Weight-only statistics (`geometry`): `max_decoder_cosine` (per latent,
    the largest `|cos|` between its decoder row and any other decoder row)
    and `encoder_decoder_cosine` (per latent, the signed cos between its own
    encoder column and its own decoder row, SAEBench's
    `encoder_decoder_cosine_sim`), with their means.

    Args:
        model: a `SparseAutoencoder` (outputs `latents` and `reconstruction`).
        x: `(num_rows, input_dim)` float activations, or an `ActivationStore`.
        batch_size: int, rows through the model at a time.
        dense_threshold: float in `[0, 1]`, the firing frequency above which
            a latent counts as dense.
        targets: `None`, or for a transcoder (`model.is_transcoder`, which
            needs them) the `(num_rows, output_dim)` targets `y` of the rows
            of `x`, in memory: `fvu`, `cosine_similarity` and `shrinkage`
            then compare `y_hat` with `y`, and `encoder_decoder_cosine` is
            NaN (`W_enc` and `W_dec` live in different spaces).

    Returns:
        A dict of floats `l0`, `fvu`, `explained_variance`,
        `cosine_similarity`, `shrinkage`, `dead_fraction`, `dense_fraction`,
        `max_decoder_cosine_mean`, `encoder_decoder_cosine_mean`, and
        `num_rows`; and numpy arrays `feature_density` `(latent_dim,)`,
        `density_histogram` (`(40,)` counts of latents per log10-density
        bin, see `density_histogram`), `density_bin_edges` `(41,)`,
        `max_decoder_cosine` and `encoder_decoder_cosine` `(latent_dim,)`.

    Example:

    >>> import numpy as np
    >>> import gated_sae_layers as gsl
    >>> sae = gsl.build_sae("topk", 8, 32, k=4)
    >>> x = np.random.default_rng(0).normal(size=(100, 8)).astype("float32")
    >>> metrics = core_metrics(sae, x, batch_size=64)
    >>> metrics["l0"], int(metrics["density_histogram"].sum())
    (4.0, 32)
    """
    dense_threshold = _check_threshold(dense_threshold)
    x, targets = _check_targets(model, x, targets)
    sums = activation_rows.FidelitySums(model.output_dim, model.latent_dim)
    target_batches = (activation_rows.row_batches(x, batch_size) if targets is None
                      else activation_rows.row_batches(targets, batch_size))
    for batch, target in zip(activation_rows.row_batches(x, batch_size), target_batches):
        latents, reconstruction = activation_rows.sae_outputs(model, batch)
        sums.update(target, latents, reconstruction)
    fvu = sums.fvu()
    density = sums.feature_density()
    counts, edges = density_histogram(density)
    decoder_kernel = ops.convert_to_numpy(model.decoder.kernel)
    max_cosine = max_decoder_cosine(decoder_kernel)
    if model.is_transcoder:
        own_cosine = np.full((model.latent_dim,), np.nan)
    else:
        own_cosine = encoder_decoder_cosine(
            ops.convert_to_numpy(model.encoder.input_kernel), decoder_kernel)
    return {
        "l0": sums.l0(),
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "cosine_similarity": sums.cosine_similarity(),
        "shrinkage": sums.shrinkage(),
        "dead_fraction": float(np.mean(sums.fire_counts == 0)),
        "dense_fraction": float(np.mean(density > dense_threshold)),
        "max_decoder_cosine_mean": float(np.mean(max_cosine)),
        "encoder_decoder_cosine_mean": float(np.mean(own_cosine)),
        "num_rows": float(sums.rows),
        "feature_density": density,
        "density_histogram": counts,
        "density_bin_edges": edges,
        "max_decoder_cosine": max_cosine,
        "encoder_decoder_cosine": own_cosine,
    }
