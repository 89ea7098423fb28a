"""The linear skip of a skip transcoder (Paulo, Shabalin & Belrose 2025)."""

import keras
from keras import ops

from gated_sae_layers._validation import check_floating_input, check_positive_int


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class SkipConnection(keras.layers.Layer):
    """Adds a linear map of the model input to a decoded output: `y_hat + x W_skip`.

    ```
    frozen=False:  [y_hat, x] -> y_hat + x @ W_skip
    frozen=True:   [y_hat, x] -> y_hat + x @ stop_gradient(W_skip)
    ```

    Paulo, Shabalin & Belrose 2025, "Transcoders beat sparse autoencoders
    for interpretability" (arXiv:2501.18823): a skip transcoder predicts an
    MLP's output `y` from its input `x` as `f(x) W_dec + b_dec + x W_skip`;
    the skip carries the linear part of the MLP, so the latents spend their
    budget on what is not linear. `W_skip` (`kernel`, shape
    `(input_dim, output_dim)`) starts at zero, as in EleutherAI's sparsify
    and SAELens's `SkipTranscoder`, so a fresh skip transcoder computes what
    the plain transcoder computes. The frozen call serves the gated
    encoder's auxiliary reconstruction, which trains the gate and must not
    move `W_skip`.

    Args:
        output_dim: int, the width of `y_hat` and of the output.
        kernel_initializer: initializer of `W_skip`; default zeros.
        **kwargs: base `Layer` arguments (`name`, `dtype`).

    Call arguments:
        inputs: a list `[decoded, activations]`: `y_hat` of shape
            `(batch, output_dim)` and `x` of shape `(batch, input_dim)`.
        frozen: bool, stop the gradient into `W_skip`.

    Returns:
        `(batch, output_dim)`.

    Example:

    >>> import numpy as np
    >>> skip = SkipConnection(2)
    >>> y_hat, x = np.zeros((1, 2), "float32"), np.ones((1, 3), "float32")
    >>> skip.build([(1, 2), (1, 3)])
    >>> _ = skip.kernel.assign(np.full((3, 2), 0.5, "float32"))
    >>> np.asarray(skip([y_hat, x])).tolist()
    [[1.5, 1.5]]
    """

    def __init__(self, output_dim, kernel_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.output_dim = check_positive_int(output_dim, "output_dim")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        decoded_shape, activations_shape = input_shape
        if decoded_shape[-1] not in (None, self.output_dim):
            raise ValueError(
                f"Layer '{self.name}' adds the skip to a decoded output of width "
                f"output_dim={self.output_dim}. Received: decoded shape "
                f"{tuple(decoded_shape)}")
        input_dim = activations_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"Layer '{self.name}' needs the width of its activations input. "
                f"Received: shape {tuple(activations_shape)}")
        self.kernel = self.add_weight(
            shape=(int(input_dim), self.output_dim), initializer=self.kernel_initializer,
            name="kernel")

    def call(self, inputs, frozen=False):
        decoded, activations = inputs
        check_floating_input(activations, self.name)
        kernel = ops.cast(self.kernel, activations.dtype)
        if frozen:
            kernel = ops.stop_gradient(kernel)
        return decoded + ops.cast(ops.matmul(activations, kernel), decoded.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "output_dim": self.output_dim,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer)}
