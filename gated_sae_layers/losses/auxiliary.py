"""The auxiliary terms: the gated SAE's frozen-decoder reconstruction, AuxK.

Each trains a part of the encoder the main reconstruction cannot reach (the
gate path; dead latents); neither is the sparsity term.
"""

import keras
from keras import ops

from gated_sae_layers.losses.base import (
    PACKAGE,
    CoefficientLoss,
    at_least_float32,
    check_same_shape,
)
from gated_sae_layers.losses.reconstruction import squared_error


def squared_norm(residual):
    """Per-example `sum_j r_j^2`.

    Args:
        residual: `(..., input_dim)`.

    Returns:
        `(...)`, one value per example (at least float32).
    """
    return ops.sum(ops.square(at_least_float32(residual)), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class AuxReconstruction(CoefficientLoss):
    """Auxiliary loss `alpha * ||x - x_hat_frozen(relu(pi_gate))||^2`.

    Rajamanoharan et al. 2024, arXiv:2404.16014, eq. 8: the input is
    reconstructed from `relu(pi_gate)` through a decoder whose weights are
    held fixed (`UnitNormDecoder(..., mode="frozen")`), so this term trains
    the gate path to be a good reconstruction on its own without moving the
    dictionary. Per example, mean over the batch. The paper uses `alpha = 1`.

    Args:
        coefficient: float >= 0, alpha. Default 1.0.
        name: the name logged during `fit`; default `"aux"`.
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
        check_same_shape(y_true, y_pred, "AuxReconstruction")
        return self.scaled(squared_error(y_true, y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
class AuxKLoss(CoefficientLoss):
    """AuxK dead-latent loss of Gao et al. 2024, `alpha * ||e - e_hat||^2`.

    Gao et al. 2024, "Scaling and evaluating sparse autoencoders",
    arXiv:2406.04093, sec. A.2: the top `k_aux` dead latents reconstruct
    the main model's residual `e = x - stop_gradient(x_hat)` as
    `e_hat = z_aux @ W_dec`, which gives dead latents a gradient again. It
    squares and sums the `AuxKResidual` output `e - e_hat` per example, mean
    over the batch (0 when no latent is dead). The paper's `alpha` is 1/32.

    Args:
        coefficient: float >= 0, alpha. Default 1/32.
        name: the name logged during `fit`; default `"aux"`.
        reduction: a Keras reduction; default `"sum_over_batch_size"`.
        dtype: the computation dtype.

    Call arguments:
        y_true: ignored (pass the input or None).
        y_pred: `(batch, input_dim)`, `e - e_hat` from `AuxKResidual`.

    Example:

    >>> import numpy as np
    >>> float(AuxKLoss(0.5)(None, np.array([[1.0, 2.0], [0.0, 0.0]])))
    1.25
    """

    needs_target = False

    def __init__(self, coefficient=1 / 32, name="aux",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(coefficient, name, reduction, dtype)

    def call(self, y_true, y_pred):
        return self.scaled(squared_norm(y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
class AuxKTargetLoss(AuxReconstruction):
    """AuxK loss of a transcoder, `alpha * ||y - (stop_gradient(y_hat) + e_hat)||^2`.

    The `AuxKLoss` of Gao et al. 2024 (arXiv:2406.04093, sec. A.2) for a
    dictionary whose target `y` is not its input: `AuxKPrediction` outputs
    `stop_gradient(y_hat) + e_hat`, and `y - that = e - e_hat` with
    `e = y - stop_gradient(y_hat)`. The squared error of `AuxReconstruction`
    (per example, mean over the batch), with the AuxK paper's default alpha.

    Args:
        coefficient: float >= 0, alpha. Default 1/32.
        name: the name logged during `fit`; default `"aux"`.
        reduction: a Keras reduction; default `"sum_over_batch_size"`.
        dtype: the computation dtype.

    Call arguments:
        y_true: `(batch, output_dim)`, the target `y`.
        y_pred: `(batch, output_dim)`, the `AuxKPrediction` output.

    Example:

    >>> import numpy as np
    >>> float(AuxKTargetLoss(0.5)(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])))
    2.5
    """

    def __init__(self, coefficient=1 / 32, name="aux",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(coefficient, name, reduction, dtype)
