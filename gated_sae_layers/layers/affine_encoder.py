"""The affine encoder base shared by the ReLU, TopK, BatchTopK and JumpReLU SAEs."""

from keras import ops

from gated_sae_layers.layers.base import SparseEncoder
from gated_sae_layers.layers.gated_encoder import check_floating_input


class AffineEncoder(SparseEncoder):
    """Base of the encoders whose latents are a sparsifying map of `x_c @ W_enc + b_enc`.

    It owns `kernel` (`W_enc`, shape `(input_dim, latent_dim)`) and `bias`
    (`b_enc`, shape `(latent_dim,)`) and computes the pre-activation
    `z = x_c @ W_enc + b_enc` of the centered input `x_c = x - b_dec`.
    Subclasses decide which entries of `z` become latents. It is not a
    layer to use on its own: its `call` is left to the subclasses.

    Args:
        latent_dim: int, the number of dictionary latents.
        kernel_initializer: initializer of `W_enc`. The `build_*` functions
            overwrite it with the transposed decoder (tied initialization).
        bias_initializer: initializer of `b_enc`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).
    """

    def build(self, input_shape):
        input_dim = self._input_dim(input_shape)
        self.kernel = self.add_weight(
            name="kernel", shape=(input_dim, self.latent_dim),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.latent_dim,), initializer=self.bias_initializer,
        )

    def pre_activation(self, inputs):
        """`z = inputs @ W_enc + b_enc`, after checking the input dtype."""
        check_floating_input(inputs, self.name)
        return ops.matmul(inputs, self.kernel) + self.bias

    def output_names(self):
        """The keys of the dict that `call` returns."""
        return ("latents",)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[:-1]) + (self.latent_dim,)
        return {name: shape for name in self.output_names()}
