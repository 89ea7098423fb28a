"""Loss terms of the gated SAE, as pure functions and thin `Loss` classes.

The total gated SAE loss (Rajamanoharan et al. 2024, arXiv:2404.16014, eq. 8):

```
L = ||x - x_hat(f(x))||^2                                 # ReconstructionLoss
    + lambda * ||relu(pi_gate(x))||_1                     # SparsityPenalty
    + alpha  * ||x - x_hat_frozen(relu(pi_gate(x)))||^2   # AuxReconstruction
```

each term summed over features and averaged over the batch.
"""

import keras
from keras import ops

from gated_sae_layers._validation import check_non_negative_float

PACKAGE = "gated_sae_layers"


def at_least_float32(tensor):
    """`tensor` cast to float32 if it is float16 or bfloat16, else unchanged.

    Loss terms sum over thousands of features: under mixed precision
    (`"mixed_bfloat16"`) the layers hand them bfloat16 outputs, and every
    loss reduces in float32 (the `Loss` classes already compute in float32,
    `keras.backend.floatx()`; the pure functions below upcast on their own).
    """
    dtype = getattr(tensor, "dtype", None)
    if dtype is not None and keras.backend.standardize_dtype(dtype) in (
            "float16", "bfloat16"):
        return ops.cast(tensor, "float32")
    return tensor


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


def l1_of_relu(gating_pre_activation):
    """Per-example `sum_j relu(pi_gate)_j`.

    Args:
        gating_pre_activation: `(..., latent_dim)`.

    Returns:
        `(...)`, one value per example (at least float32).
    """
    return ops.sum(ops.relu(at_least_float32(gating_pre_activation)), axis=-1)


def _check_same_shape(y_true, y_pred, loss_name):
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if len(true_shape) != len(pred_shape) or any(
        a is not None and b is not None and a != b
        for a, b in zip(true_shape, pred_shape)
    ):
        raise ValueError(
            f"`{loss_name}` needs the target and the reconstruction to have "
            f"the same shape. Received: y_true.shape={true_shape}, "
            f"y_pred.shape={pred_shape}"
        )


class _CoefficientLoss(keras.losses.Loss):
    """A loss scaled by a coefficient held in a non-trainable variable.

    The coefficient is a `keras.Variable`, read inside the compiled train
    step: assigning it (`set_coefficient`, `SparsityWarmup`,
    `SparseAutoencoder.set_lambda`) changes the very next step.
    """

    def __init__(self, coefficient, name, reduction, dtype):
        coefficient = check_non_negative_float(coefficient, "coefficient")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.coefficient = keras.Variable(
            coefficient, dtype="float32", trainable=False,
            name=f"{name}_coefficient",
        )

    def set_coefficient(self, value):
        """Assigns a new coefficient (a float >= 0); the next step uses it."""
        value = check_non_negative_float(value, "coefficient")
        self.coefficient.assign(value)

    def _scaled(self, values):
        return values * ops.cast(self.coefficient, values.dtype)

    def get_config(self):
        config = super().get_config()
        config["coefficient"] = float(ops.convert_to_numpy(self.coefficient))
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReconstructionLoss(keras.losses.Loss):
    """Squared L2 reconstruction error, summed over features.

    `loss = sum_j (x - x_hat)_j^2` per example, mean over the batch. Unlike
    `keras.losses.MeanSquaredError` it sums (does not average) over
    features, which is the scale the paper's coefficients are set for.

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
        _check_same_shape(y_true, y_pred, "ReconstructionLoss")
        return squared_error(y_true, y_pred)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SparsityPenalty(_CoefficientLoss):
    """Gated SAE sparsity penalty `lambda * sum_j relu(pi_gate)_j`.

    Rajamanoharan et al. 2024, eq. 8. The penalty acts on the gating
    pre-activation, not the latents: it shrinks only the gate path, and
    the magnitude path stays free of shrinkage.

    `coefficient` (the paper's lambda) lives in a non-trainable variable:
    changing it mid-`fit` changes the very next step.

    Args:
        coefficient: float >= 0, lambda.
        name: the name logged during `fit`.
        reduction: a Keras reduction; default `"sum_over_batch_size"`.
        dtype: the computation dtype.

    Call arguments:
        y_true: ignored (the penalty has no target); pass the input or None.
        y_pred: `(batch, latent_dim)`, the gating pre-activation.

    Example:

    >>> import numpy as np
    >>> penalty = SparsityPenalty(0.5)
    >>> float(penalty(None, np.array([[1.0, -2.0, 3.0]])))
    2.0
    """

    # The model's sparsity term: `SparseAutoencoder.sparsity_penalties()`,
    # `set_sparsity_coefficient` and `SparsityWarmup` act on it.
    is_sparsity_term = True

    def __init__(
        self, coefficient=1e-3, name="sparsity",
        reduction="sum_over_batch_size", dtype=None,
    ):
        super().__init__(coefficient, name, reduction, dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if y_true is None:
            y_true = y_pred
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        return self._scaled(l1_of_relu(y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
class AuxReconstruction(_CoefficientLoss):
    """Auxiliary loss `alpha * ||x - x_hat_frozen(relu(pi_gate))||^2`.

    Rajamanoharan et al. 2024, eq. 8: the input is reconstructed from
    `relu(pi_gate)` through a decoder whose weights are held fixed
    (`UnitNormDecoder(..., mode="frozen")`), so this term trains the gate
    path to be a good reconstruction on its own without moving the
    dictionary. The paper uses `alpha = 1`.

    Args:
        coefficient: float >= 0, alpha. Default 1.0.
        name: the name logged during `fit`.
        reduction: a Keras reduction; default `"sum_over_batch_size"`.
        dtype: the computation dtype.

    Call arguments:
        y_true: `(batch, input_dim)` activations.
        y_pred: `(batch, input_dim)`, the frozen-decoder reconstruction of
            `relu(pi_gate)`.

    Example:

    >>> import numpy as np
    >>> float(AuxReconstruction(2.0)(np.ones((2, 3)), np.zeros((2, 3))))
    6.0
    """

    def __init__(
        self, coefficient=1.0, name="aux",
        reduction="sum_over_batch_size", dtype=None,
    ):
        super().__init__(coefficient, name, reduction, dtype)

    def call(self, y_true, y_pred):
        _check_same_shape(y_true, y_pred, "AuxReconstruction")
        return self._scaled(squared_error(y_true, y_pred))
