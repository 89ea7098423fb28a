"""The SAE decoder with unit-norm dictionary rows."""

import keras
from keras import ops

from gated_sae_layers._validation import check_floating_input, check_positive_int
from gated_sae_layers.constraints import UnitNormRows, normalize_rows
from gated_sae_layers.sparse.kernels import Centered, sparse_decode

MODES = ("decode", "frozen", "center")


def project_out_parallel_gradient(kernel, epsilon=1e-8):
    """Identity on `kernel` whose gradient has no component along each row.

    The backward pass returns `g_i - (g_i . w_i / ||w_i||^2) w_i` for each row
    `i`, so an optimizer step moves a unit-norm row (to first order) along
    the sphere instead of changing its length, as in Bricken et al. 2023.
    """

    @ops.custom_gradient
    def identity(weights):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            parallel = ops.sum(upstream * weights, axis=-1, keepdims=True)
            squared_norms = ops.sum(ops.square(weights), axis=-1, keepdims=True)
            return upstream - parallel / (squared_norms + epsilon) * weights

        return weights, grad

    return identity(kernel)


class _UnitNormRowsInitializer:
    """Draws from an initializer, then scales every row to unit norm."""

    def __init__(self, base):
        self.base = base

    def __call__(self, shape, dtype=None):
        return normalize_rows(self.base(shape, dtype=dtype))


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class UnitNormDecoder(keras.layers.Layer):
    """SAE decoder `x_hat = f @ W_dec + b_dec` with unit-norm rows of `W_dec`.

    One layer, three call modes, so that `b_dec` is a single variable shared
    exactly as in the paper (Rajamanoharan et al. 2024, arXiv:2404.16014,
    eq. 3 and 10):

    ```
    mode="center":  x     -> x - b_dec                          # encoder input
    mode="decode":  f     -> f @ W_dec + b_dec                  # reconstruction
    mode="frozen":  f     -> f @ stop_gradient(W_dec) + stop_gradient(b_dec)
    use_bias=False: f     -> f @ W_dec      (decode or frozen, without b_dec)
    ```

    The frozen mode serves the auxiliary loss of the gated SAE: it passes
    exactly zero gradient to `W_dec` and `b_dec`. `use_bias=False` serves
    the AuxK loss (Gao et al. 2024), which decodes without `b_dec`, so
    `b_dec` gets no gradient from it. Call the same layer object at each
    site of a Functional model; it is saved and reloaded as one layer.
    `row_norms()` gives `||W_dec[j]||` per latent (`DecoderNormWeighting`
    weights the latents by it).

    `W_dec` (`kernel`, shape `(latent_dim, output_dim)`) starts with unit-norm
    rows and is kept unit-norm after every optimizer step by `UnitNormRows`
    (the constraint runs inside the compiled train step). With
    `remove_parallel_gradient=True` the gradient's component along each row
    is removed before the optimizer sees it.

    Args:
        latent_dim: int, the number of dictionary rows `M`.
        output_dim: int, the width `n` of the reconstructed activations (the
            SAE's input width).
        kernel_initializer: initializer of `W_dec` before the rows are scaled
            to unit norm.
        bias_initializer: initializer of `b_dec`. Training works best with
            `b_dec` set to the data mean (or geometric median) before `fit`.
        kernel_constraint: constraint applied after each step; default
            `UnitNormRows()`. Pass `None` to train without it (then use the
            `DecoderNormalizer` callback or the sparsity penalty can be
            gamed by growing the rows).
        remove_parallel_gradient: bool, project out the gradient component
            parallel to each row.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: float tensor; `(..., latent_dim)` in the `"decode"` and
            `"frozen"` modes, `(..., output_dim)` in the `"center"` mode.
        mode: one of `"decode"` (default), `"frozen"`, `"center"`.
        use_bias: bool, default `True`; `False` leaves out `b_dec` when
            decoding (`"decode"` and `"frozen"` modes only).

    Returns:
        A tensor `(..., output_dim)`.

    Example:

    >>> import numpy as np
    >>> decoder = UnitNormDecoder(latent_dim=16, output_dim=8)
    >>> x = np.random.rand(4, 8).astype("float32")
    >>> tuple(decoder(x, mode="center").shape)
    (4, 8)
    >>> tuple(decoder(np.ones((4, 16), "float32")).shape)
    (4, 8)
    >>> bool(np.allclose(decoder.row_norms(), 1.0, atol=1e-6))
    True
    """

    def __init__(
        self,
        latent_dim,
        output_dim,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_constraint="unit_norm_rows",
        remove_parallel_gradient=False,
        **kwargs,
    ):
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        output_dim = check_positive_int(output_dim, "output_dim")
        if not isinstance(remove_parallel_gradient, bool):
            raise TypeError(
                "`remove_parallel_gradient` must be a bool. Received: "
                f"remove_parallel_gradient={remove_parallel_gradient!r}"
            )
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.output_dim = output_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        if kernel_constraint == "unit_norm_rows":
            kernel_constraint = UnitNormRows()
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.remove_parallel_gradient = remove_parallel_gradient

    def build(self, input_shape=None):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.latent_dim, self.output_dim),
            initializer=_UnitNormRowsInitializer(self.kernel_initializer),
            constraint=self.kernel_constraint,
            # Read at full precision under mixed precision: the row norms and
            # the parallel-gradient projection need float32; `call` casts
            # the kernel to the compute dtype for the matmul itself.
            autocast=False,
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.output_dim,),
            initializer=self.bias_initializer,
        )

    def row_norms(self):
        """`||W_dec[j]||_2` for each latent `j`: `(latent_dim,)`, float32."""
        return ops.sqrt(ops.sum(ops.square(self.kernel), axis=-1))

    def _check_input(self, inputs, mode, use_bias):
        if mode not in MODES:
            raise ValueError(
                f"`mode` must be one of {MODES}. Received: mode={mode!r}"
            )
        if not isinstance(use_bias, bool):
            raise TypeError(
                f"`use_bias` must be a bool. Received: use_bias={use_bias!r}")
        if not use_bias and mode not in ("decode", "frozen"):
            raise ValueError(
                "`use_bias=False` applies to decoding only (mode='decode' or "
                f"'frozen'). Received: mode={mode!r}, use_bias=False")
        check_floating_input(inputs, self.name)
        width = self.output_dim if mode == "center" else self.latent_dim
        what = "output_dim" if mode == "center" else "latent_dim"
        shape = tuple(inputs.shape)
        if len(shape) < 2 or shape[-1] != width:
            raise ValueError(
                f"Layer '{self.name}' in mode={mode!r} expects inputs of shape "
                f"(..., {width}) ({what}={width}). Received: inputs.shape={shape}"
            )

    def call(self, inputs, mode="decode", use_bias=True):
        self._check_input(inputs, mode, use_bias)
        if mode == "center":
            return inputs - self.bias
        kernel, bias = ops.convert_to_tensor(self.kernel), self.bias
        if mode == "frozen":
            kernel = ops.stop_gradient(kernel)
            bias = ops.stop_gradient(bias)
        elif self.remove_parallel_gradient:
            kernel = project_out_parallel_gradient(kernel)
        decoded = ops.matmul(inputs, ops.cast(kernel, self.compute_dtype))
        return decoded + bias if use_bias else decoded

    def sparse_center(self, inputs):
        """`call(inputs, mode="center")` kept as its parts, a `Centered`.

        The sparse training path hands it to the encoder, which then gives
        `b_dec` its gradient without a `(rows, input_dim)` intermediate.
        """
        self._check_input(inputs, "center", True)
        return Centered(inputs, self.bias)

    def sparse_call(self, inputs, mode="decode", use_bias=True):
        """`call` on a `SparseLatents` (the sparse training path).

        Decodes by gathering the `W_dec` rows of the slots
        (`sparse_decode`): the same result as `call` on the dense latents,
        and in `"frozen"` mode the same zero gradient to `W_dec` and `b_dec`.
        """
        if mode not in ("decode", "frozen"):
            raise ValueError(
                f"Layer '{self.name}' decodes sparse latents in mode 'decode' or "
                f"'frozen' only. Received: mode={mode!r}")
        self._check_input(inputs, mode, use_bias)
        kernel, bias = ops.convert_to_tensor(self.kernel), self.bias
        if mode == "frozen":
            bias = ops.stop_gradient(bias)
        elif self.remove_parallel_gradient:
            kernel = project_out_parallel_gradient(kernel)
        decoded = sparse_decode(inputs.values, inputs.indices, kernel, self.compute_dtype,
                                kernel_trainable=mode == "decode",
                                active_slots=inputs.active_slots)
        return decoded + bias if use_bias else decoded

    def compute_output_spec(self, inputs, mode="decode", use_bias=True):
        return keras.KerasTensor(tuple(inputs.shape[:-1]) + (self.output_dim,),
                                 dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "latent_dim": self.latent_dim,
                "output_dim": self.output_dim,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
                "remove_parallel_gradient": self.remove_parallel_gradient,
            }
        )
        return config


def unit_norm_decoders(model):
    """Every `UnitNormDecoder` inside `model` (nested models included)."""
    from gated_sae_layers._keras_compat import sublayers

    return [layer for layer in sublayers(model) if isinstance(layer, UnitNormDecoder)]
