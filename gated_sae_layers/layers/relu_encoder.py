"""The ReLU encoder of the standard (L1-penalized) SAE."""

import keras
from keras import ops

from gated_sae_layers.layers.affine_encoder import AffineEncoder
from gated_sae_layers.sparse.kernels import as_tensor
from gated_sae_layers.sparse.latents import SparseLatents
from gated_sae_layers.sparse.selection import Selection
from gated_sae_layers.sparse.support import support_indices


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class ReLUEncoder(AffineEncoder):
    """ReLU SAE encoder, `f = relu((x - b_dec) @ W_enc + b_enc)`.

    The baseline of Rajamanoharan et al. 2024 (arXiv:2404.16014, sec. 2)
    and of Bricken et al. 2023 ("Towards Monosemanticity"), trained with an
    L1 penalty on the latents (`L1Penalty`). The weights are `kernel`
    (`W_enc`, `(input_dim, latent_dim)`) and `bias` (`b_enc`, `(latent_dim,)`).

    Args:
        latent_dim: int, the number of dictionary latents `M`.
        kernel_initializer: initializer of `W_enc`. `build_relu_sae`
            overwrites it with the transposed decoder (tied initialization).
        bias_initializer: initializer of `b_enc`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(..., input_dim)`, the *centered* input
            `x - b_dec` (see `UnitNormDecoder(..., mode="center")`).

    Returns:
        A dict with `"latents"`, `(..., latent_dim)`, non-negative.

    Example:

    >>> import numpy as np
    >>> encoder = ReLUEncoder(latent_dim=16)
    >>> latents = encoder(np.random.rand(4, 8).astype("float32"))["latents"]
    >>> tuple(latents.shape), bool(np.all(np.asarray(latents) >= 0))
    ((4, 16), True)
    """

    def call(self, inputs):
        return {"latents": ops.relu(self.pre_activation(inputs))}

    # The sparse path: the slots of a row hold its support (`z > 0`).
    def sparse_slots(self, cap):
        return min(cap, self.latent_dim)

    def sparse_selection(self, inputs, slots):
        product = self.sparse_product(inputs)
        indices, support_sizes, _ = support_indices(product, slots, as_tensor(self.bias))
        return Selection(product, indices, support_sizes)

    def sparse_call(self, inputs, selection, training=None):
        pre_activation = self.pre_activation_at(inputs, selection.product,
                                                selection.indices, selection.active_slots,
                                                selection.product_at_slots)
        return {"latents": SparseLatents(ops.relu(pre_activation), selection.indices,
                                         self.latent_dim, selection.active_slots)}
