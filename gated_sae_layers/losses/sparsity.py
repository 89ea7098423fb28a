"""The sparsity terms: gated L1 of relu(pi_gate), L1 of the latents, L0.

Each subclasses `SparsityLoss`, which declares `is_sparsity_term = True`, so
`SparseAutoencoder.sparsity_penalties()`, `set_sparsity_coefficient`,
`SparsityWarmup` and the resampler act on whichever one a model carries.
Each takes one output alone: `y_true` is ignored (pass the input or None).
"""

import keras
from keras import ops

from gated_sae_layers.losses.base import PACKAGE, CoefficientLoss, at_least_float32


def _sum_over_latents(values):
    """`(..., latent_dim)` -> `(...)`, summed in at least float32."""
    return ops.sum(at_least_float32(values), axis=-1)


def l1_of_relu(gating_pre_activation):
    """Per-example `sum_j relu(pi_gate)_j` of `(..., latent_dim)` -> `(...)`."""
    return _sum_over_latents(ops.relu(at_least_float32(gating_pre_activation)))


def l1_norm(latents):
    """Per-example `sum_j |f_j|` of `(..., latent_dim)` latents -> `(...)`."""
    return _sum_over_latents(ops.abs(at_least_float32(latents)))


def active_count(active_latents):
    """Per-example `sum_j H(z_j - theta_j)`, the number of active latents.

    `active_latents` is the 0/1 step `H(z - theta)`, `(..., latent_dim)`;
    returns `(...)`, at least float32.
    """
    return _sum_over_latents(active_latents)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SparsityLoss(CoefficientLoss):
    """Base of the sparsity terms: `lambda * penalty(output)`, no target.

    Subclassing it is how a loss says "I am the model's sparsity term"
    (`is_sparsity_term = True`): `SparseAutoencoder.sparsity_penalties()`,
    `set_sparsity_coefficient`, `SparsityWarmup` and the resampler act on
    it. It reads one output alone (`needs_target = False`: `y_true` is
    ignored) and is logged as `"sparsity"` by default. A subclass writes
    only `call(y_true, y_pred)`, returning `self.scaled(per-example penalty)`.

    Args:
        coefficient: float >= 0, lambda.
        name: the name logged during `fit`; default `"sparsity"`.
        reduction: a Keras reduction; default `"sum_over_batch_size"`.
        dtype: the computation dtype.

    Example:

    >>> from keras import ops
    >>> class L2Penalty(SparsityLoss):
    ...     def call(self, y_true, y_pred):
    ...         return self.scaled(ops.sum(ops.square(y_pred), axis=-1))
    >>> float(L2Penalty(0.5)(None, ops.convert_to_tensor([[1.0, 2.0]])))
    2.5
    """

    is_sparsity_term = True
    needs_target = False

    def __init__(
        self, coefficient=1e-3, name="sparsity",
        reduction="sum_over_batch_size", dtype=None,
    ):
        super().__init__(coefficient, name, reduction, dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SparsityPenalty(SparsityLoss):
    """Gated SAE sparsity penalty `lambda * sum_j relu(pi_gate)_j`.

    Rajamanoharan et al. 2024, arXiv:2404.16014, eq. 8, per example, mean
    over the batch. The penalty acts on the gating pre-activation, not the
    latents: it shrinks only the gate path, and the magnitude path stays
    free of shrinkage.

    `coefficient` (the paper's lambda) lives in a non-trainable variable:
    changing it mid-`fit` changes the very next step.

    Args:
        coefficient: float >= 0, lambda.
        name: the name logged during `fit`; default `"sparsity"`.
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

    supports_sparse_latents = True

    def call(self, y_true, y_pred):
        return self.scaled(l1_of_relu(y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
class L1Penalty(SparsityLoss):
    """L1 sparsity penalty of the ReLU SAE, `lambda * sum_j |f_j|`.

    The standard SAE penalty (Bricken et al. 2023; the baseline of
    Rajamanoharan et al. 2024, arXiv:2404.16014, eq. 2), per example, mean
    over the batch. For Anthropic's April 2024 update ("Circuits Updates -
    April 2024") feed it `DecoderNormWeighting(decoder)(f)`, the
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

    supports_sparse_latents = True

    def call(self, y_true, y_pred):
        return self.scaled(l1_norm(y_pred))


@keras.saving.register_keras_serializable(package=PACKAGE)
class L0Penalty(SparsityLoss):
    """L0 sparsity penalty of the JumpReLU SAE, `lambda * sum_j H(z_j - theta_j)`.

    Rajamanoharan et al. 2024, arXiv:2407.14435, eq. 9, per example, mean
    over the batch. It sums the `"active_latents"` output of
    `JumpReLUEncoder`, the step `H(z - theta)`, which carries the paper's
    pseudo-derivative `dH/dtheta = -(1/eps) K((z - theta)/eps)` and passes
    no gradient to `z`. Fed anything else, it only sums its input.

    Args: as `SparsityLoss` (`coefficient` is lambda).

    Call arguments:
        y_true: ignored (pass the input or None).
        y_pred: `(batch, latent_dim)`, the 0/1 active latents.

    Example:

    >>> import numpy as np
    >>> float(L0Penalty(0.5)(None, np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])))
    0.75
    """

    supports_sparse_latents = True

    def call(self, y_true, y_pred):
        return self.scaled(active_count(y_pred))
