"""The affine encoder base shared by the ReLU, TopK, BatchTopK and JumpReLU SAEs."""

from keras import ops

from gated_sae_layers._validation import check_floating_input
from gated_sae_layers.layers.base import SparseEncoder
from gated_sae_layers.sparse.kernels import as_tensor, gather_vector, gathered_product


class AffineEncoder(SparseEncoder):
    """Base of the encoders whose latents are a sparsifying map of `x_c @ W_enc + b_enc`.

    It owns `kernel` (`W_enc`, shape `(input_dim, latent_dim)`, the
    `input_kernel`) and `bias` (`b_enc`, shape `(latent_dim,)`, reset to 0
    for a resampled latent) and computes the pre-activation
    `z = x_c @ W_enc + b_enc` of the centered input `x_c = x - b_dec`.
    Subclasses decide which entries of `z` become latents (`call`) and add
    their own per-latent variables to `latent_parameters()`. It is not a
    layer to use on its own: its `call` is left to the subclasses.

    Args:
        latent_dim: int, the number of dictionary latents.
        kernel_initializer: initializer of `W_enc`. The `build_*` functions
            overwrite it with the transposed decoder (tied initialization).
        bias_initializer: initializer of `b_enc`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Example, a variant with the absolute value as its sparsifying map:

    >>> import numpy as np
    >>> class AbsEncoder(AffineEncoder):
    ...     def call(self, inputs):
    ...         return {"latents": ops.abs(self.pre_activation(inputs))}
    >>> encoder = AbsEncoder(latent_dim=16)
    >>> tuple(encoder(np.ones((4, 8), "float32"))["latents"].shape)
    (4, 16)
    >>> tuple(encoder.input_kernel.shape), [v.name for v, _ in encoder.latent_parameters()]
    ((8, 16), ['bias'])
    """

    # The variables `build` creates and their axes (`latent_layout_map`).
    latent_axes = {"kernel": (None, "latent"), "bias": ("latent",)}

    def build(self, input_shape):
        input_dim = self._input_dim(input_shape)
        self.kernel = self.add_weight(
            name="kernel", shape=(input_dim, self.latent_dim),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.latent_dim,), initializer=self.bias_initializer,
        )

    @property
    def input_kernel(self):
        """`W_enc`, `(input_dim, latent_dim)`."""
        return self.kernel

    def latent_parameters(self):
        """`b_enc`, reset to 0."""
        return [(self.bias, 0.0)]

    def pre_activation(self, inputs):
        """`z = inputs @ W_enc + b_enc`, after checking the input dtype."""
        check_floating_input(inputs, self.name)
        return ops.matmul(inputs, self.kernel) + self.bias

    def sparse_product(self, inputs):
        """`inputs @ W_enc`, without gradient: the sparse path's one dense matmul."""
        check_floating_input(inputs, self.name)
        return ops.stop_gradient(ops.matmul(inputs, self.kernel))

    def pre_activation_at(self, inputs, product, indices, active_slots=None,
                          at_slots=None):
        """`z[r, indices[r, s]]`, `(rows, slots)`: the pre-activation at the slots.

        Equal to `pre_activation(inputs)` at those entries, bit for bit; its
        gradient reaches `W_enc` and `b_enc` through the slots only
        (`gathered_product`, `gather_vector`). `active_slots`, `at_slots`:
        as `Selection.active_slots` and `Selection.product_at_slots`.
        """
        return (gathered_product(inputs, as_tensor(self.kernel), indices, product,
                                 active_slots, at_slots)
                + gather_vector(as_tensor(self.bias), indices))
