"""Keeps a prefix of the latents: the nested dictionaries of a Matryoshka SAE."""

import keras
from keras import ops

from gated_sae_layers._validation import check_positive_int


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class PrefixMask(keras.layers.Layer):
    """Keeps the first `size` latents and zeros the rest: `f[..., :size], 0, ..., 0`.

    Matryoshka SAEs (Bussmann et al. 2025, "Learning Multi-Level Features
    with Matryoshka Sparse Autoencoders", arXiv:2503.17547; Nabeshima 2024)
    reconstruct the input from each prefix `f_{1..m}` of the latents with
    the same decoder and sum the reconstruction losses, so the first
    latents learn the general features on their own. The output keeps the
    input's shape, so the model's decoder reads it directly.

    Args:
        size: int >= 1, the number of leading latents kept.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: `(..., latent_dim)` latents with `latent_dim >= size`.

    Returns:
        `(..., latent_dim)`.

    Example:

    >>> import numpy as np
    >>> np.asarray(PrefixMask(2)(np.array([[1.0, 2.0, 3.0]], "float32"))).tolist()
    [[1.0, 2.0, 0.0]]
    """

    def __init__(self, size, **kwargs):
        size = check_positive_int(size, "size")
        super().__init__(**kwargs)
        self.size = size

    def build(self, input_shape):
        width = input_shape[-1]
        if width is not None and width < self.size:
            raise ValueError(
                f"Layer '{self.name}' keeps the first {self.size} latents but its "
                f"input has only {width}. Received: input_shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        width = inputs.shape[-1]
        keep = ops.cast(ops.arange(width) < self.size, inputs.dtype)
        return inputs * keep

    def sparse_call(self, inputs):
        """`call` on a `SparseLatents`: zero the slots of latents `>= size`."""
        keep = ops.cast(inputs.indices < self.size, inputs.dtype)
        return inputs.with_values(inputs.values * keep)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "size": self.size}
