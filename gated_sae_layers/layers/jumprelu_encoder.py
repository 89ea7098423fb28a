"""The JumpReLU encoder of Rajamanoharan et al. 2024 (arXiv:2407.14435)."""

import math

import keras
from keras import ops

from gated_sae_layers._validation import check_positive_float
from gated_sae_layers.layers.affine_encoder import AffineEncoder
from gated_sae_layers.sparse.kernels import as_tensor, gather_vector
from gated_sae_layers.sparse.latents import SparseLatents
from gated_sae_layers.sparse.selection import Selection
from gated_sae_layers.sparse.support import support_indices


def rectangle(u):
    """The rectangle kernel `K(u) = 1[|u| < 1/2]`."""
    return ops.cast(ops.abs(u) < 0.5, u.dtype)


def _read(value):
    """A tensor: TF's custom_gradient rejects variables read inside the function."""
    return ops.copy(value) if isinstance(value, keras.Variable) else value


def _sum_to_threshold_shape(values, threshold):
    """Sums a `(..., latent_dim)` gradient over the leading axes `threshold` lacks.

    A `(latent_dim,)` threshold gets the sum over the rows; a threshold of
    the shape of `values` (the sparse path's per-slot thresholds), `values`.
    """
    leading = len(values.shape) - len(threshold.shape)
    return ops.sum(values, axis=tuple(range(leading))) if leading else values


def jump_relu(pre_activation, threshold, bandwidth):
    """`JumpReLU_theta(z) = z * H(z - theta)` with the paper's pseudo-derivatives.

    Forward: `z` where `z > theta`, else 0. Backward (Rajamanoharan et al.
    2024, arXiv:2407.14435, eq. 11): `d/dz = H(z - theta)`;
    `d/dtheta = -(theta / eps) K((z - theta) / eps)` with the rectangle `K`.

    Args:
        pre_activation: `(..., latent_dim)`, `z`.
        threshold: `(latent_dim,)`, `theta > 0`.
        bandwidth: float, `eps`.

    Returns:
        `(..., latent_dim)`.
    """

    @ops.custom_gradient
    def forward(z, theta):
        active = z > theta

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            grad_z = ops.where(active, upstream, ops.zeros_like(upstream))
            pseudo = -(theta / bandwidth) * rectangle((z - theta) / bandwidth)
            return grad_z, _sum_to_threshold_shape(upstream * pseudo, theta)

        return ops.where(active, z, ops.zeros_like(z)), grad

    return forward(_read(pre_activation), _read(threshold))


def heaviside_step(pre_activation, threshold, bandwidth):
    """The Heaviside step `H(z - theta)` with the paper's pseudo-derivative.

    Forward: 1 where `z > theta`, else 0. Backward (Rajamanoharan et al.
    2024, eq. 12): no gradient to `z`; `d/dtheta = -(1 / eps) K((z - theta) / eps)`.

    Args:
        pre_activation: `(..., latent_dim)`, `z`.
        threshold: `(latent_dim,)`, `theta > 0`.
        bandwidth: float, `eps`.

    Returns:
        `(..., latent_dim)`, 0/1 values.
    """

    @ops.custom_gradient
    def forward(z, theta):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            pseudo = -(1.0 / bandwidth) * rectangle((z - theta) / bandwidth)
            return ops.zeros_like(z), _sum_to_threshold_shape(upstream * pseudo, theta)

        return ops.cast(z > theta, z.dtype), grad

    return forward(_read(pre_activation), _read(threshold))


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class JumpReLUEncoder(AffineEncoder):
    """JumpReLU SAE encoder: a latent fires only above its own learned threshold.

    With `x_c = x - b_dec`:

    ```
    z     = x_c @ W_enc + b_enc                # pre-activation
    theta = exp(log_threshold)                 # per-latent threshold > 0
    f     = z * H(z - theta)                   # JumpReLU, the latents
    s     = H(z - theta)                       # active latents, for L0Penalty
    ```

    Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction
    Fidelity with JumpReLU Sparse Autoencoders", arXiv:2407.14435, eq. 4
    and 9-12. `H` has zero derivative almost everywhere, so both outputs
    carry the paper's straight-through pseudo-derivatives with the
    rectangle kernel `K(u) = 1[|u| < 1/2]` and bandwidth `eps`:

    ```
    d f / d theta = -(theta / eps) K((z - theta) / eps)      d f / d z = H(z - theta)
    d s / d theta = -(1 / eps)     K((z - theta) / eps)      d s / d z = 0
    ```

    The per-latent threshold (`learned_threshold`; not to be confused with
    the single inference threshold of `BatchTopKEncoder`) is trained
    through the variable `log_threshold` (shape `(latent_dim,)`), so
    `theta` stays positive. Only pre-activations within `eps / 2` of
    `theta` move it: keep `eps` on the scale of the pre-activations (the
    paper normalizes the data to `E||x||^2 = input_dim` and uses 0.001).
    A resampled latent gets `b_enc = 0` and `theta = initial_threshold`
    back (`latent_parameters()`).

    Args:
        latent_dim: int, the number of latents `M`.
        initial_threshold: float > 0, `theta` at initialization (paper: 0.001).
        bandwidth: float > 0, `eps` of the pseudo-derivatives (paper: 0.001).
        kernel_initializer: initializer of `W_enc` (`kernel`);
            `build_jumprelu_sae` overwrites it with the transposed decoder.
        bias_initializer: initializer of `b_enc` (`bias`).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: float tensor `(..., input_dim)`, the centered input `x - b_dec`.

    Returns:
        A dict with `"latents"` (`f`) and `"active_latents"` (`s`, 0/1), both
        `(..., latent_dim)`.

    Example:

    >>> import numpy as np
    >>> encoder = JumpReLUEncoder(latent_dim=16, initial_threshold=0.05)
    >>> out = encoder(np.random.rand(4, 8).astype("float32"))
    >>> latents, active = np.asarray(out["latents"]), np.asarray(out["active_latents"])
    >>> bool(np.all((latents > 0.05) == (active == 1)))
    True
    """

    def __init__(self, latent_dim, initial_threshold=0.001, bandwidth=0.001,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 **kwargs):
        initial_threshold = check_positive_float(initial_threshold, "initial_threshold")
        bandwidth = check_positive_float(bandwidth, "bandwidth")
        super().__init__(latent_dim, kernel_initializer, bias_initializer, **kwargs)
        self.initial_threshold = initial_threshold
        self.bandwidth = bandwidth

    # `AffineEncoder`'s variables and log(theta), per latent.
    latent_axes = {**AffineEncoder.latent_axes, "log_threshold": ("latent",)}

    def build(self, input_shape):
        super().build(input_shape)
        self.log_threshold = self.add_weight(
            name="log_threshold", shape=(self.latent_dim,),
            initializer=keras.initializers.Constant(math.log(self.initial_threshold)),
            autocast=False,  # theta stays float32 under mixed precision
        )

    @property
    def learned_threshold(self):
        """`theta = exp(log_threshold)`, `(latent_dim,)`."""
        return ops.exp(self.log_threshold)

    def latent_parameters(self):
        """`b_enc`, reset to 0, and `log_threshold`, reset to `log(initial_threshold)`."""
        return super().latent_parameters() + [
            (self.log_threshold, math.log(self.initial_threshold))]

    def output_names(self):
        return ("latents", "active_latents")

    def call(self, inputs):
        pre_activation = self.pre_activation(inputs)
        # Under mixed precision the step and its pseudo-derivatives (sums over
        # the batch) run in float32; only the outputs take the compute dtype.
        dtype = keras.backend.result_type(pre_activation.dtype, "float32")
        return self._outputs(ops.cast(pre_activation, dtype),
                             ops.cast(self.learned_threshold, dtype))

    def _outputs(self, pre_activation, threshold):
        return {
            "latents": ops.cast(jump_relu(pre_activation, threshold, self.bandwidth),
                                self.compute_dtype),
            "active_latents": ops.cast(
                heaviside_step(pre_activation, threshold, self.bandwidth),
                self.compute_dtype),
        }

    # The sparse path: the slots of a row hold every latent above its
    # threshold and every latent within `eps / 2` of it (where the
    # pseudo-derivatives are nonzero, active or not).
    def sparse_slots(self, cap):
        return min(cap, self.latent_dim)

    def sparse_selection(self, inputs, slots):
        product = self.sparse_product(inputs)
        pre_activation = product + as_tensor(self.bias)
        dtype = keras.backend.result_type(pre_activation.dtype, "float32")
        pre_activation = ops.cast(pre_activation, dtype)
        threshold = ops.cast(self.learned_threshold, dtype)
        needed = ops.logical_or(
            pre_activation > threshold,
            rectangle((pre_activation - threshold) / self.bandwidth) > 0)
        indices, support_sizes, _ = support_indices(ops.cast(needed, "float32"), slots)
        return Selection(product, indices, support_sizes)

    def sparse_call(self, inputs, selection, training=None):
        indices = selection.indices
        pre_activation = self.pre_activation_at(inputs, selection.product, indices,
                                                selection.active_slots,
                                                selection.product_at_slots)
        dtype = keras.backend.result_type(pre_activation.dtype, "float32")
        threshold = gather_vector(ops.cast(self.learned_threshold, dtype), indices)
        outputs = self._outputs(ops.cast(pre_activation, dtype), threshold)
        return {name: SparseLatents(value, indices, self.latent_dim, selection.active_slots)
                for name, value in outputs.items()}

    def get_config(self):
        config = super().get_config()
        config.update({"initial_threshold": self.initial_threshold,
                       "bandwidth": self.bandwidth})
        return config
