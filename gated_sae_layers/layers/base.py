"""The base class of every SAE encoder layer."""

import keras

from gated_sae_layers._validation import check_positive_int


class SparseEncoder(keras.layers.Layer):
    """Base of every SAE encoder layer of the kit.

    An encoder takes the centered input `x - b_dec` of shape
    `(..., input_dim)` and returns a dict that holds at least `"latents"`,
    `(..., latent_dim)`, plus whatever its loss terms read.
    `SparseAutoencoder.encoder` finds the model's encoder through this class.

    The base validates and stores the arguments every encoder has, fixes the
    input width at build (`_input_dim`), and serializes those arguments.

    Args:
        latent_dim: int, the number of dictionary latents.
        kernel_initializer: initializer of the encoder's input kernel.
        bias_initializer: initializer of its biases.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).
    """

    def __init__(self, latent_dim, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def _input_dim(self, input_shape):
        """The input width; fixes it in the input spec (call this in `build`)."""
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"Layer '{self.name}' needs a known last axis (input_dim) to "
                f"build. Received: input_shape={tuple(input_shape)}"
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})
        return input_dim

    def get_config(self):
        config = super().get_config()
        config.update({
            "latent_dim": self.latent_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config
