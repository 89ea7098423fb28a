"""The reconstruction term: squared L2 error summed over features."""

import keras
from keras import ops

from gated_sae_layers.losses.base import PACKAGE, at_least_float32, check_same_shape


def squared_error(y_true, y_pred):
    """Per-example squared L2 error `sum_j (y_true - y_pred)_j^2`.

    Args:
        y_true: `(..., input_dim)`, the activations to reconstruct.
        y_pred: `(..., input_dim)`, the reconstruction.

    Returns:
        `(...)`, one value per example (at least float32).
    """
    return ops.sum(ops.square(at_least_float32(y_true) - at_least_float32(y_pred)),
                   axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReconstructionLoss(keras.losses.Loss):
    """Squared L2 reconstruction error, summed over features.

    `loss = sum_j (x - x_hat)_j^2` per example, mean over the batch. Unlike
    `keras.losses.MeanSquaredError` it sums (does not average) over
    features, which is the scale the paper's coefficients are set for.
    It has no coefficient (its weight is 1 in every SAE's total loss).

    Args:
        name: the name logged during `fit`.
        reduction: a Keras reduction; default `"sum_over_batch_size"`.
        dtype: the computation dtype.

    Call arguments:
        y_true: `(batch, input_dim)` activations.
        y_pred: `(batch, input_dim)` reconstruction.

    Example:

    >>> import numpy as np
    >>> float(ReconstructionLoss()(np.ones((2, 3)), np.zeros((2, 3))))
    3.0
    """

    def __init__(
        self, name="reconstruction", reduction="sum_over_batch_size", dtype=None
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        check_same_shape(y_true, y_pred, "ReconstructionLoss")
        return squared_error(y_true, y_pred)
