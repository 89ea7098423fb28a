"""Weight constraints for sparse-autoencoder dictionaries."""

import keras
from keras import ops

from gated_sae_layers._validation import check_positive_float


def normalize_rows(weights, epsilon=1e-8):
    """Divides each row of a 2-D tensor by its L2 norm.

    Rows with norm at least `epsilon` come out with norm 1 (to float
    rounding); a row with norm below `epsilon` is divided by `epsilon`
    instead, so an all-zero row stays zero rather than becoming NaN.

    Args:
        weights: tensor of shape `(latent_dim, input_dim)`.
        epsilon: the smallest norm that is divided by.

    Returns:
        A tensor of the same shape.
    """
    norms = ops.sqrt(ops.sum(ops.square(weights), axis=-1, keepdims=True))
    return weights / ops.maximum(norms, epsilon)


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class UnitNormRows(keras.constraints.Constraint):
    """Constrains every row of a `(latent_dim, input_dim)` kernel to unit norm.

    `w_i <- w_i / max(||w_i||_2, epsilon)` for each row (dictionary atom) `i`.

    This is the decoder constraint of the gated SAE (Rajamanoharan et al.
    2024, arXiv:2404.16014, section 3): with unit-norm decoder rows the
    sparsity penalty cannot be dodged by shrinking latents and growing the
    dictionary. Keras applies a constraint inside the compiled train step
    after every optimizer update, never to the initial weights:
    `UnitNormDecoder` therefore also starts from unit-norm rows.

    Contract: after the constraint, a row whose norm was at least `epsilon`
    has norm 1 within float rounding (about 1e-6 in float32); a row whose
    norm was below `epsilon` has norm `||w_i|| / epsilon < 1`.

    Args:
        epsilon: float > 0, the smallest norm divided by.

    Example:

    >>> import numpy as np
    >>> constraint = UnitNormRows()
    >>> w = constraint(np.array([[3.0, 4.0], [0.0, 0.0]], "float32"))
    >>> np.asarray(w).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """

    def __init__(self, epsilon=1e-8):
        self.epsilon = check_positive_float(epsilon, "epsilon")

    def __call__(self, w):
        return normalize_rows(ops.convert_to_tensor(w), self.epsilon)

    def get_config(self):
        return {"epsilon": self.epsilon}
