"""The BatchTopK encoder of Bussmann et al. 2024 (arXiv:2412.06410)."""

import keras
from keras import ops

from gated_sae_layers._validation import check_non_negative_float
from gated_sae_layers.layers.auxk_encoder import AuxKEncoder
from gated_sae_layers.layers.top_k_selection import (
    keep_top_k_over_batch,
    smallest_positive,
    top_k_over_batch,
)
from gated_sae_layers.sparse.kernels import as_tensor
from gated_sae_layers.sparse.latents import SparseLatents
from gated_sae_layers.sparse.selection import Selection, rows_of_flat_entries


def jump_relu_at(values, threshold):
    """`values * 1[values > threshold]` for a scalar threshold.

    The comparison promotes: bfloat16 `values` meet a float32 `threshold`
    at float32, as under mixed precision.
    """
    return ops.where(ops.greater(values, threshold), values, ops.zeros_like(values))


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class BatchTopKEncoder(AuxKEncoder):
    """BatchTopK SAE encoder: keep the `batch * k` largest activations of the batch.

    With `x_c = x - b_dec` and `a = relu(x_c @ W_enc + b_enc)`:

    ```
    training:   f = BatchTopK_{B*k}(a)           # B*k largest entries of the (B, M) batch
                theta <- m * theta + (1 - m) * min(kept a > 0)
    inference:  f = a * 1[a > theta]             # a JumpReLU with one threshold
    ```

    Bussmann, Leask, Nanda 2024, "BatchTopK Sparse Autoencoders",
    arXiv:2412.06410, sec. 3. The budget `k` is an average over the batch:
    an example may use more or fewer latents. The inference threshold
    `theta` (`inference_threshold`, one non-trainable scalar variable saved
    as `threshold`) is a running average, with momentum
    `threshold_momentum`, of the smallest positive kept activation of each
    training batch (the first batch sets it). Inference (`training=False`)
    uses it, so a row's latents do not depend on the rest of its batch.
    Before the first training step (`inference_threshold == 0`) inference
    falls back to the batch top-k. (Not to be confused with the learned
    per-latent `JumpReLUEncoder.learned_threshold`.)

    Dead latents and the `"aux_latents"` for the AuxK loss work as in
    `TopKEncoder` (Bussmann et al. keep the AuxK loss of Gao et al.).

    Args:
        latent_dim: int, the number of latents `M`.
        k: int, `1 <= k <= latent_dim`, active latents per example on average.
        k_aux: int >= 1, the AuxK budget, capped at `latent_dim`.
        dead_steps_threshold: int >= 1, training steps without firing after
            which a latent is dead.
        threshold_momentum: float in [0, 1), the running average's momentum
            (0.99 matches Bussmann et al.'s rate of 0.01).
        kernel_initializer, bias_initializer: initializers of `W_enc`
            (`kernel`) and `b_enc` (`bias`).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: float tensor `(..., input_dim)`, the centered input `x - b_dec`.
        training: bool; `True` selects the batch top-k and updates the
            threshold and the dead-latent counter.

    Returns:
        A dict with `"latents"` and `"aux_latents"`, both `(..., latent_dim)`.

    Example:

    >>> import numpy as np
    >>> encoder = BatchTopKEncoder(latent_dim=16, k=2)
    >>> x = np.random.rand(8, 4).astype("float32")
    >>> latents = np.asarray(encoder(x, training=True)["latents"])
    >>> int((latents > 0).sum()) <= 8 * 2, float(encoder.inference_threshold) > 0
    (True, True)
    """

    def __init__(self, latent_dim, k, k_aux=512, dead_steps_threshold=1000,
                 threshold_momentum=0.99, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        threshold_momentum = check_non_negative_float(
            threshold_momentum, "threshold_momentum")
        if threshold_momentum >= 1:
            raise ValueError(
                "`threshold_momentum` must be in [0, 1). Received: "
                f"threshold_momentum={threshold_momentum}"
            )
        super().__init__(latent_dim, k, k_aux, dead_steps_threshold,
                         kernel_initializer, bias_initializer, **kwargs)
        self.threshold_momentum = threshold_momentum

    # `AuxKEncoder`'s variables and the scalar threshold (replicated).
    latent_axes = {**AuxKEncoder.latent_axes, "threshold": ()}

    def build(self, input_shape):
        super().build(input_shape)
        # autocast=False: under mixed precision the running average is read
        # and blended in float32 (a bfloat16 read rounds away its updates).
        # The variable keeps the name `threshold` (saved files, layout maps).
        self.inference_threshold = self.add_weight(
            name="threshold", shape=(), initializer="zeros", trainable=False,
            autocast=False)

    def _update_threshold(self, smallest_positive):
        old = self.inference_threshold.value
        blended = (self.threshold_momentum * old
                   + (1.0 - self.threshold_momentum) * smallest_positive)
        new = ops.where(old > 0, blended, smallest_positive)
        self.inference_threshold.assign(
            ops.where(ops.isfinite(smallest_positive), new, old))

    def call(self, inputs, training=None):
        pre_activation = self.pre_activation(inputs)
        activations = ops.relu(pre_activation)
        if training:
            latents, smallest_positive = keep_top_k_over_batch(activations, self.k)
            self._update_threshold(
                ops.cast(smallest_positive, self.inference_threshold.dtype))
        else:
            threshold = ops.convert_to_tensor(self.inference_threshold)  # float32
            latents = ops.cond(
                threshold > 0,
                lambda: jump_relu_at(activations, threshold),
                lambda: keep_top_k_over_batch(activations, self.k)[0],
            )
        aux_latents = self.track_and_aux(latents, pre_activation, training)
        return {"latents": latents, "aux_latents": aux_latents}

    # The sparse path (training only): the batch's `rows * k` kept entries, laid
    # out as `cap` slots per row; a row that keeps more makes the step fall
    # back to the dense path. Kept entries equal to 0 need no slot.
    def sparse_slots(self, cap):
        return min(cap, self.latent_dim)

    def sparse_selection(self, inputs, slots):
        product = self.sparse_product(inputs)
        activations = ops.relu(product + as_tensor(self.bias))
        top_values, flat_indices = top_k_over_batch(activations, self.k)
        indices, valid, sizes = rows_of_flat_entries(
            flat_indices, top_values > 0, ops.shape(product)[0], self.latent_dim, slots)
        kept = ops.take_along_axis(activations, indices, axis=1)
        fired = SparseLatents(ops.where(valid, kept, ops.zeros_like(kept)), indices,
                              self.latent_dim)
        return Selection(product, indices, sizes, extra={
            "valid": valid, "smallest_positive": smallest_positive(top_values),
            **self.aux_extra(fired)})

    def sparse_call(self, inputs, selection, training=None):
        if not training:
            raise ValueError(
                f"Layer '{self.name}' runs its sparse path in training only; "
                "inference applies the threshold to the dense pre-activation.")
        indices = selection.indices
        activations = ops.relu(self.pre_activation_at(inputs, selection.product, indices))
        latents = SparseLatents(
            ops.where(selection.extra["valid"], activations, ops.zeros_like(activations)),
            indices, self.latent_dim)
        self._update_threshold(ops.cast(selection.extra["smallest_positive"],
                                        self.inference_threshold.dtype))
        aux_latents = self.sparse_track_and_aux(latents, inputs, selection, training)
        return {"latents": latents, "aux_latents": aux_latents}

    def get_config(self):
        return {**super().get_config(), "threshold_momentum": self.threshold_momentum}
