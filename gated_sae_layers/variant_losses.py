"""Loss terms of the SAE variants: L1 (ReLU SAE), L0 (JumpReLU SAE), AuxK (TopK SAEs).

Each is a pure, shape-documented function plus a thin `Loss` class whose
coefficient lives in a non-trainable `keras.Variable` (assigning it changes
the next compiled step). `L1Penalty` and `L0Penalty` subclass
`SparsityPenalty`, so `SparseAutoencoder.set_sparsity_coefficient` and the
`SparsityWarmup` callback drive them as they drive the gated SAE's penalty.
"""

import keras
from keras import ops

from gated_sae_layers.losses import (
    PACKAGE,
    SparsityPenalty,
    _CoefficientLoss,
    at_least_float32,
)


def l1_norm(latents):
    """Per-example `sum_j |f_j|`.

    Args:
        latents: `(..., latent_dim)`.

    Returns:
        `(...)`, one value per example (at least float32).
    """
    return ops.sum(ops.abs(at_least_float32(latents)), axis=-1)


def active_count(active_latents):
    """Per-example `sum_j H(z_j - theta_j)`, the number of active latents.

    Args:
        active_latents: `(..., latent_dim)`, the 0/1 step `H(z - theta)`.

    Returns:
        `(...)`, one value per example (at least float32).
    """
    return ops.sum(at_least_float32(active_latents), axis=-1)


def squared_norm(residual):
    """Per-example `sum_j r_j^2`.

    Args:
        residual: `(..., input_dim)`.

    Returns:
        `(...)`, one value per example (at least float32).
    """
    return ops.sum(ops.square(at_least_float32(residual)), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class L1Penalty(SparsityPenalty):
    """L1 sparsity penalty of the ReLU SAE, `lambda * sum_j |f_j|`.

    The standard SAE penalty (Bricken et al. 2023; the baseline of
    Rajamanoharan et al. 2024, arXiv:2404.16014, eq. 2), per example, mean
    over the batch. For Anthropic's April 2024 update ("Circuits Updates -
    April 2024") feed it `decoder(f, mode="scale_by_row_norm")`, the
    latents weighted by their decoder row norms `f_j ||W_dec,j||`.

    Args:
        coefficient: float >= 0, lambda.
        name: the name logged during `fit`; default `"sparsity"`.
        reduction: a Keras reduction; default `"sum_over_batch_size"`.
        dtype: the computation dtype.

    Call arguments:
        y_true: ignored (pass the input or None).
        y_pred: `(batch, latent_dim)` latents (or norm-weighted latents).

    Example:

    >>> import numpy as np
    >>> float(L1Penalty(0.5)(None, np.array([[1.0, 0.0, 3.0], [0.0, 2.0, 0.0]])))
    1.5
    """

    def call(self, y_true, y_pred):
        return self._scaled(l1_norm(y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
class L0Penalty(SparsityPenalty):
    """L0 sparsity penalty of the JumpReLU SAE, `lambda * sum_j H(z_j - theta_j)`.

    Rajamanoharan et al. 2024, arXiv:2407.14435, eq. 9, per example, mean
    over the batch. It sums the `"active_latents"` output of
    `JumpReLUEncoder`, the step `H(z - theta)`, which carries the paper's
    pseudo-derivative `dH/dtheta = -(1/eps) K((z - theta)/eps)` and passes
    no gradient to `z`. Fed anything else, it only sums its input.

    Args:
        coefficient: float >= 0, lambda.
        name: the name logged during `fit`; default `"sparsity"`.
        reduction: a Keras reduction; default `"sum_over_batch_size"`.
        dtype: the computation dtype.

    Call arguments:
        y_true: ignored (pass the input or None).
        y_pred: `(batch, latent_dim)`, the 0/1 active latents.

    Example:

    >>> import numpy as np
    >>> float(L0Penalty(0.5)(None, np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])))
    0.75
    """

    def call(self, y_true, y_pred):
        return self._scaled(active_count(y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
class AuxKLoss(_CoefficientLoss):
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

    def __init__(self, coefficient=1 / 32, name="aux",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(coefficient, name, reduction, dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if y_true is None:
            y_true = y_pred
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        return self._scaled(squared_norm(y_pred))
