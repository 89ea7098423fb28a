"""Sparse-autoencoder metrics, exact across batches.

Each metric keeps running sums in variables (shapes fixed at construction,
so they work on every backend), and `result()` is the value the metric
would have on all the data seen since `reset_state()` at once: during
`fit` that is the whole epoch, not a mean of batch means.
"""

import keras
from keras import ops

from gated_sae_layers import distribution
from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.sparse.latents import SparseLatents

PACKAGE = "gated_sae_layers"


def _rows(tensor):
    """Flattens `(..., width)` to `(rows, width)`."""
    return ops.reshape(tensor, (-1, tensor.shape[-1]))


def _row_weights(sample_weight, num_rows, dtype):
    if sample_weight is None:
        return ops.ones((num_rows,), dtype=dtype)
    return ops.reshape(ops.cast(sample_weight, dtype), (-1,))


@keras.saving.register_keras_serializable(package=PACKAGE)
class L0(keras.metrics.Metric):
    """Mean number of active latents per example, `E_x[ ||f(x)||_0 ]`.

    A latent is active where it is strictly positive.

    Args:
        name: the name logged during `fit`; default `"l0"`.
        dtype: the accumulator dtype.

    Call arguments (`update_state`):
        y_true: ignored.
        y_pred: `(batch, latent_dim)` latents, or a `SparseLatents` (the
            sparse training path: `supports_sparse_latents`).
        sample_weight: optional `(batch,)` weights.

    Example:

    >>> import numpy as np
    >>> metric = L0()
    >>> metric.update_state(None, np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]]))
    >>> float(metric.result())
    1.0
    """

    supports_sparse_latents = True

    def __init__(self, name="l0", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.active_total = self.add_variable(
            shape=(), initializer="zeros", name="active_total")
        self.example_count = self.add_variable(
            shape=(), initializer="zeros", name="example_count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if isinstance(y_pred, SparseLatents):
            active = y_pred.active_counts(self.dtype)
        else:
            latents = _rows(ops.convert_to_tensor(y_pred))
            active = ops.sum(ops.cast(latents > 0, self.dtype), axis=-1)
        weights = _row_weights(sample_weight, ops.shape(active)[0], self.dtype)
        self.active_total.assign_add(ops.sum(active * weights))
        self.example_count.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.active_total, self.example_count)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FractionOfVarianceUnexplained(keras.metrics.Metric):
    """Fraction of variance unexplained, `sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`.

    Both sums run over every example and feature seen since the last reset;
    `mean(x)` is the mean over those examples (per feature). The variance is
    accumulated around a shift (the first batch's mean), which keeps float32
    round-off small when activations have a large common offset.

    Args:
        input_dim: int, the activation width (fixes the accumulator shapes).
        name: the name logged during `fit`; default `"fvu"`.
        dtype: the accumulator dtype.

    Call arguments (`update_state`):
        y_true: `(batch, input_dim)` activations.
        y_pred: `(batch, input_dim)` reconstruction.
        sample_weight: optional `(batch,)` weights.

    Example:

    >>> import numpy as np
    >>> metric = FractionOfVarianceUnexplained(input_dim=1)
    >>> metric.update_state(np.array([[0.0], [2.0]]), np.array([[0.5], [1.5]]))
    >>> float(metric.result())
    0.25
    """

    def __init__(self, input_dim, name="fvu", dtype=None):
        input_dim = check_positive_int(input_dim, "input_dim")
        super().__init__(name=name, dtype=dtype)
        self.input_dim = input_dim
        shape = (input_dim,)
        # One shift for every tf.distribute replica: read it from the first.
        self.shift = self.add_variable(shape=shape, initializer="zeros", name="shift",
                                       aggregation="only_first_replica")
        self.shifted_sum = self.add_variable(
            shape=shape, initializer="zeros", name="shifted_sum")
        self.shifted_square_sum = self.add_variable(
            shape=shape, initializer="zeros", name="shifted_square_sum")
        self.residual_square_sum = self.add_variable(
            shape=(), initializer="zeros", name="residual_square_sum")
        self.example_count = self.add_variable(
            shape=(), initializer="zeros", name="example_count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        x = ops.cast(_rows(ops.convert_to_tensor(y_true)), self.dtype)
        x_hat = ops.cast(_rows(ops.convert_to_tensor(y_pred)), self.dtype)
        weights = _row_weights(sample_weight, ops.shape(x)[0], self.dtype)
        weight_sum = ops.sum(weights)
        # The shift is the mean of the first global batch: under
        # tf.distribute every replica must center on the same shift, since
        # their sums are added when the metric is read.
        totals = distribution.sum_over_replicas(ops.concatenate([
            ops.sum(x * weights[:, None], axis=0),
            ops.stack([weight_sum, ops.cast(self.example_count.value, self.dtype)])]))
        batch_mean = ops.divide_no_nan(totals[:-2], totals[-2])
        shift = ops.where(totals[-1] > 0, self.shift.value, batch_mean)
        self.shift.assign(shift)
        deviation = x - shift
        self.shifted_sum.assign_add(ops.sum(deviation * weights[:, None], axis=0))
        self.shifted_square_sum.assign_add(
            ops.sum(ops.square(deviation) * weights[:, None], axis=0))
        residual = ops.sum(ops.square(x - x_hat), axis=-1)
        self.residual_square_sum.assign_add(ops.sum(residual * weights))
        self.example_count.assign_add(weight_sum)

    def result(self):
        mean_deviation = ops.divide_no_nan(self.shifted_sum, self.example_count)
        total_variance = ops.sum(
            self.shifted_square_sum - self.shifted_sum * mean_deviation)
        return ops.divide_no_nan(self.residual_square_sum, total_variance)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LayerFractionOfVarianceUnexplained(FractionOfVarianceUnexplained):
    """`FractionOfVarianceUnexplained` of one layer of a crosscoder.

    A crosscoder over `n` layers reads and reconstructs the layers side by
    side, `(batch, n * input_dim)`; this metric reads columns
    `layer * input_dim` to `(layer + 1) * input_dim`, layer `layer`'s FVU.

    Args:
        input_dim: int, the width of one layer.
        layer: int >= 0, which layer.
        name: the name logged during `fit`; default `"fvu_layer_<layer>"`.
        dtype: the accumulator dtype.

    Example:

    >>> import numpy as np
    >>> metric = LayerFractionOfVarianceUnexplained(input_dim=1, layer=1)
    >>> y = np.array([[5.0, 0.0], [5.0, 2.0]])
    >>> metric.update_state(y, np.array([[0.0, 0.5], [0.0, 1.5]]))
    >>> float(metric.result())
    0.25
    """

    def __init__(self, input_dim, layer, name=None, dtype=None):
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ValueError(f"`layer` must be an int >= 0. Received: layer={layer!r}")
        super().__init__(input_dim, name=name or f"fvu_layer_{layer}", dtype=dtype)
        self.layer = layer

    def update_state(self, y_true, y_pred, sample_weight=None):
        start, stop = self.layer * self.input_dim, (self.layer + 1) * self.input_dim
        y_true, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
        if y_true.shape[-1] is not None and y_true.shape[-1] < stop:
            raise ValueError(
                f"Metric '{self.name}' reads columns {start}:{stop} (layer "
                f"{self.layer} of width {self.input_dim}). Received: "
                f"{y_true.shape[-1]} columns")
        super().update_state(y_true[..., start:stop], y_pred[..., start:stop],
                             sample_weight)

    def get_config(self):
        return {**super().get_config(), "layer": self.layer}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DeadFeatures(keras.metrics.Metric):
    """Number of latents that never fired (were never > 0) since the last reset.

    During `fit` the metric resets at every epoch, so the logged value is
    the number of latents dead for the whole epoch. It keeps a firing count
    per latent (`fire_counts`), not a 0/1 flag, so replicas can be summed.

    Args:
        latent_dim: int, the number of latents.
        name: the name logged during `fit`; default `"dead_features"`.
        dtype: the accumulator dtype.

    Call arguments (`update_state`):
        y_true: ignored.
        y_pred: `(batch, latent_dim)` latents, or a `SparseLatents` (the
            sparse training path: `supports_sparse_latents`).
        sample_weight: optional `(batch,)` weights; rows with weight 0 are
            not counted.

    Example:

    >>> import numpy as np
    >>> metric = DeadFeatures(latent_dim=3)
    >>> metric.update_state(None, np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
    >>> float(metric.result())
    1.0
    """

    supports_sparse_latents = True

    def __init__(self, latent_dim, name="dead_features", dtype=None):
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        super().__init__(name=name, dtype=dtype)
        self.latent_dim = latent_dim
        self.fire_counts = self.add_variable(
            shape=(latent_dim,), initializer="zeros", name="fire_counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if isinstance(y_pred, SparseLatents):
            self.fire_counts.assign_add(
                y_pred.fired_counts(self.dtype, row_weights=sample_weight))
            return
        latents = _rows(ops.convert_to_tensor(y_pred))
        weights = _row_weights(sample_weight, ops.shape(latents)[0], self.dtype)
        fired = ops.cast(latents > 0, self.dtype) * ops.cast(
            weights[:, None] > 0, self.dtype)
        self.fire_counts.assign_add(ops.sum(fired, axis=0))

    def result(self):
        return ops.sum(ops.cast(self.fire_counts == 0, self.dtype))

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package=PACKAGE)
class RelativeReconstructionBias(keras.metrics.Metric):
    """Shrinkage `gamma = E||x_hat||^2 / E[x_hat . x]` (Rajamanoharan et al. 2024, sec. 5.2).

    `gamma` solves `argmin_gamma E||x_hat / gamma - x||^2`: 1 means unbiased
    reconstructions, below 1 means they are shrunk toward zero (the L1
    penalty of a ReLU SAE does this; the gated SAE should not).

    Args:
        name: the name logged during `fit`; default
            `"relative_reconstruction_bias"`.
        dtype: the accumulator dtype.

    Call arguments (`update_state`):
        y_true: `(batch, input_dim)` activations.
        y_pred: `(batch, input_dim)` reconstruction.
        sample_weight: optional `(batch,)` weights.

    Example:

    >>> import numpy as np
    >>> metric = RelativeReconstructionBias()
    >>> metric.update_state(np.array([[2.0, 0.0]]), np.array([[1.0, 0.0]]))
    >>> float(metric.result())
    0.5
    """

    def __init__(self, name="relative_reconstruction_bias", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.reconstruction_square_sum = self.add_variable(
            shape=(), initializer="zeros", name="reconstruction_square_sum")
        self.cross_sum = self.add_variable(
            shape=(), initializer="zeros", name="cross_sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        x = ops.cast(_rows(ops.convert_to_tensor(y_true)), self.dtype)
        x_hat = ops.cast(_rows(ops.convert_to_tensor(y_pred)), self.dtype)
        weights = _row_weights(sample_weight, ops.shape(x)[0], self.dtype)
        self.reconstruction_square_sum.assign_add(
            ops.sum(ops.sum(ops.square(x_hat), axis=-1) * weights))
        self.cross_sum.assign_add(ops.sum(ops.sum(x_hat * x, axis=-1) * weights))

    def result(self):
        return ops.divide_no_nan(self.reconstruction_square_sum, self.cross_sum)
