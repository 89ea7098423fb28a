"""The gated encoder of Rajamanoharan et al. 2024 (arXiv:2404.16014)."""

import keras
from keras import ops

# `check_floating_input` lived here; kept importable from this module.
from gated_sae_layers._validation import check_floating_input
from gated_sae_layers.layers.base import SparseEncoder
from gated_sae_layers.sparse.kernels import as_tensor, gather_vector, gathered_product
from gated_sae_layers.sparse.latents import SparseLatents
from gated_sae_layers.sparse.selection import Selection
from gated_sae_layers.sparse.support import support_indices


def gated_encode(
    centered_inputs, gate_kernel, gate_bias, magnitude_log_scale, magnitude_bias
):
    """The gated SAE encoder as a pure function.

    Args:
        centered_inputs: `(..., input_dim)`, the input minus the decoder bias.
        gate_kernel: `(input_dim, latent_dim)`, `W_gate`.
        gate_bias: `(latent_dim,)`, `b_gate`.
        magnitude_log_scale: `(latent_dim,)`, `r_mag`.
        magnitude_bias: `(latent_dim,)`, `b_mag`.

    Returns:
        `(latents, gating_pre_activation)`, both `(..., latent_dim)`.
    """
    # One matmul serves both paths:
    # x_c @ (exp(r_mag) * W_gate) == (x_c @ W_gate) * exp(r_mag).
    projection = ops.matmul(centered_inputs, gate_kernel)
    gating_pre_activation = projection + gate_bias
    magnitude_pre_activation = (
        projection * ops.exp(magnitude_log_scale) + magnitude_bias
    )
    # The gate 1[pi_gate > 0] is a step: `where` passes no gradient through
    # the condition, so `b_gate` learns only from the sparsity and aux terms.
    latents = ops.where(
        gating_pre_activation > 0,
        ops.relu(magnitude_pre_activation),
        ops.zeros_like(magnitude_pre_activation),
    )
    return latents, gating_pre_activation


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class GatedEncoder(SparseEncoder):
    """Gated SAE encoder: a gate decides which latents fire, a magnitude path how much.

    With `x_c = x - b_dec` (the input centered by the decoder bias):

    ```
    pi_gate = x_c @ W_gate + b_gate                     # gating pre-activation
    f_gate  = 1[pi_gate > 0]
    W_mag   = exp(r_mag) * W_gate                       # weights tied per latent
    f_mag   = relu(x_c @ W_mag + b_mag)
    f       = f_gate * f_mag                            # the latents
    ```

    Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated
    Sparse Autoencoders", arXiv:2404.16014, eq. 5-7. A single matmul
    `x_c @ W_gate` serves both paths, since
    `x_c @ (exp(r_mag) * W_gate) == (x_c @ W_gate) * exp(r_mag)`.

    The layer returns the gating pre-activation beside the latents, because
    the sparsity penalty (`SparsityPenalty`) and the auxiliary loss
    (`AuxReconstruction` of `relu(pi_gate)`) are computed from it.

    The weights are `gate_kernel` (`W_gate`, the `input_kernel`) and the
    per-latent `gate_bias` (`b_gate`), `magnitude_log_scale` (`r_mag`) and
    `magnitude_bias` (`b_mag`) (the `latent_parameters()`, reset to 0 when
    a dead latent is resampled).

    Args:
        latent_dim: int, the number of dictionary latents `M`.
        kernel_initializer: initializer of `W_gate`. `build_gated_sae`
            overwrites it with the transposed decoder (tied initialization).
        bias_initializer: initializer of `b_gate` and `b_mag`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor `(..., input_dim)`, the *centered* input
            `x - b_dec` (see `UnitNormDecoder(..., mode="center")`).

    Returns:
        A dict with `"latents"` (`(..., latent_dim)`, non-negative, exactly
        zero wherever the gating pre-activation is <= 0) and
        `"gating_pre_activation"` (`(..., latent_dim)`).

    Example:

    >>> import numpy as np
    >>> encoder = GatedEncoder(latent_dim=16)
    >>> out = encoder(np.random.rand(4, 8).astype("float32"))
    >>> tuple(out["latents"].shape), tuple(out["gating_pre_activation"].shape)
    ((4, 16), (4, 16))
    """

    # The variables `build` creates and their axes (`latent_layout_map`).
    latent_axes = {"gate_kernel": (None, "latent"), "gate_bias": ("latent",),
                   "magnitude_log_scale": ("latent",), "magnitude_bias": ("latent",)}

    def build(self, input_shape):
        input_dim = self._input_dim(input_shape)
        self.gate_kernel = self.add_weight(
            name="gate_kernel",
            shape=(input_dim, self.latent_dim),
            initializer=self.kernel_initializer,
        )
        self.gate_bias = self.add_weight(
            name="gate_bias", shape=(self.latent_dim,),
            initializer=self.bias_initializer,
        )
        self.magnitude_log_scale = self.add_weight(
            name="magnitude_log_scale", shape=(self.latent_dim,),
            initializer="zeros",
        )
        self.magnitude_bias = self.add_weight(
            name="magnitude_bias", shape=(self.latent_dim,),
            initializer=self.bias_initializer,
        )

    @property
    def input_kernel(self):
        """`W_gate`, `(input_dim, latent_dim)`."""
        return self.gate_kernel

    def latent_parameters(self):
        """`b_gate`, `b_mag` and `r_mag`, each reset to 0."""
        return [(self.gate_bias, 0.0), (self.magnitude_bias, 0.0),
                (self.magnitude_log_scale, 0.0)]

    def output_names(self):
        return ("latents", "gating_pre_activation")

    def call(self, inputs):
        check_floating_input(inputs, self.name)
        latents, gating_pre_activation = gated_encode(
            inputs,
            self.gate_kernel,
            self.gate_bias,
            self.magnitude_log_scale,
            self.magnitude_bias,
        )
        return {"latents": latents, "gating_pre_activation": gating_pre_activation}

    # The sparse path: the slots of a row hold its gate's support
    # (`pi_gate > 0`), which holds every latent that can be nonzero and every
    # entry that the sparsity and auxiliary terms give a gradient.
    def sparse_slots(self, cap):
        return min(cap, self.latent_dim)

    def sparse_selection(self, inputs, slots):
        check_floating_input(inputs, self.name)
        product = ops.stop_gradient(ops.matmul(inputs, self.gate_kernel))
        indices, support_sizes, _ = support_indices(product, slots,
                                                   as_tensor(self.gate_bias))
        return Selection(product, indices, support_sizes)

    def sparse_call(self, inputs, selection, training=None):
        check_floating_input(inputs, self.name)
        indices, active_slots = selection.indices, selection.active_slots
        projection = gathered_product(inputs, as_tensor(self.gate_kernel), indices,
                                      selection.product, active_slots,
                                      selection.product_at_slots)
        gating_pre_activation = projection + gather_vector(as_tensor(self.gate_bias),
                                                           indices)
        magnitude_pre_activation = (
            projection * ops.exp(gather_vector(as_tensor(self.magnitude_log_scale),
                                               indices))
            + gather_vector(as_tensor(self.magnitude_bias), indices))
        latents = ops.where(gating_pre_activation > 0,
                            ops.relu(magnitude_pre_activation),
                            ops.zeros_like(magnitude_pre_activation))
        return {"latents": SparseLatents(latents, indices, self.latent_dim, active_slots),
                "gating_pre_activation": SparseLatents(
                    gating_pre_activation, indices, self.latent_dim, active_slots)}
