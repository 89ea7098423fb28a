"""`AuxKEncoder`: the TopK-style encoder base that tracks dead latents and emits AuxK latents.

Gao et al. 2024, "Scaling and evaluating sparse autoencoders", arXiv:2406.04093,
sec. A.2. The residual the AuxK latents explain is `AuxKResidual`
(`layers/auxk_residual.py`); their loss is `AuxKLoss`.
"""

from keras import ops

from gated_sae_layers._validation import check_k, check_positive_int
from gated_sae_layers.distribution import sum_over_replicas
from gated_sae_layers.layers.affine_encoder import AffineEncoder
from gated_sae_layers.layers.top_k_selection import keep_top_k
from gated_sae_layers.sparse.kernels import as_tensor
from gated_sae_layers.sparse.latents import SparseLatents
from gated_sae_layers.sparse.selection import top_k_indices


def steps_since_fired_update(steps_since_fired, latents):
    """The counter after one training step: 0 where a latent fired, else +1.

    Under `tf.distribute`, "fired" counts the rows of every replica, so each
    replica keeps the counter a single device would.

    Args:
        steps_since_fired: `(latent_dim,)` int counter.
        latents: `(..., latent_dim)`, the step's latents, or a
            `SparseLatents`.

    Returns:
        `(latent_dim,)`, the new counter.
    """
    if isinstance(latents, SparseLatents):
        fired_rows = latents.fired_counts("int32")
    else:
        rows = ops.reshape(latents, (-1, latents.shape[-1]))
        fired_rows = ops.sum(ops.cast(rows > 0, "int32"), axis=0)
    fired = sum_over_replicas(fired_rows) > 0
    return ops.where(fired, ops.zeros_like(steps_since_fired), steps_since_fired + 1)


def auxk_latents(pre_activation, dead, k_aux):
    """The AuxK latents: relu of the top `k_aux` pre-activations among dead latents.

    Args:
        pre_activation: `(..., latent_dim)`, `z = x_c @ W_enc + b_enc`.
        dead: `(latent_dim,)` bool, which latents are dead.
        k_aux: int, at most `latent_dim`.

    Returns:
        `(..., latent_dim)`, non-negative; nonzero only at dead latents, at
        most `k_aux` per row. All zeros when no latent is dead.
    """
    masked = ops.where(dead, pre_activation, ops.zeros_like(pre_activation))
    return ops.relu(keep_top_k(masked, k_aux))


class AuxKEncoder(AffineEncoder):
    """Base of the TopK-style encoders: tracks dead latents and emits AuxK latents.

    ```
    steps_since_fired_j <- 0 if latent j fired for a row of the batch, else +1
    dead_j               = steps_since_fired_j >= dead_steps_threshold
    z_aux                = relu(TopK_k_aux(z restricted to dead latents))
    ```

    A non-trainable counter `steps_since_fired` (`(latent_dim,)`, int32)
    holds, per latent, the number of consecutive training steps (calls with
    `training=True`) in which it fired for no row of the batch; it resets to
    0 when the latent fires (and when `DeadLatentResampler` resamples it: it
    is one of the `latent_parameters()`). It is updated inside the compiled
    train step, like `BatchNormalization`'s moving statistics, and is saved
    with the model.

    Besides `"latents"` the call returns `"aux_latents"`, `z_aux` above
    (Gao et al. 2024, arXiv:2406.04093, sec. A.2): the input of the AuxK
    loss (`AuxKResidual`, `AuxKLoss`). A subclass computes its latents from
    `pre_activation(inputs)` and returns
    `track_and_aux(latents, pre_activation, training)` as `"aux_latents"`.

    Args:
        latent_dim: int, the number of latents.
        k: int, `1 <= k <= latent_dim`, the number of active latents per row.
        k_aux: int >= 1, the AuxK budget (Gao et al. use 512); capped at
            `latent_dim`.
        dead_steps_threshold: int >= 1, the training steps without firing
            after which a latent counts as dead.
        kernel_initializer, bias_initializer, **kwargs: as `AffineEncoder`.

    Example, an encoder that keeps every positive pre-activation:

    >>> import numpy as np
    >>> class ReLUWithAuxK(AuxKEncoder):
    ...     def call(self, inputs, training=None):
    ...         z = self.pre_activation(inputs)
    ...         latents = ops.relu(z)
    ...         return {"latents": latents,
    ...                 "aux_latents": self.track_and_aux(latents, z, training)}
    >>> encoder = ReLUWithAuxK(latent_dim=4, k=2, dead_steps_threshold=1)
    >>> encoder.build((None, 3))
    >>> _ = encoder.kernel.assign(np.ones((3, 4), "float32"))
    >>> _ = encoder.bias.assign(np.array([0.0, 0.0, -9.0, -9.0], "float32"))
    >>> _ = encoder(np.ones((2, 3), "float32"), training=True)
    >>> np.asarray(encoder.steps_since_fired).tolist(), np.asarray(encoder.dead_latents()).tolist()
    ([0, 0, 1, 1], [False, False, True, True])
    """

    def __init__(self, latent_dim, k, k_aux=512, dead_steps_threshold=1000,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 **kwargs):
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        k = check_k(k, latent_dim)
        k_aux = check_positive_int(k_aux, "k_aux")
        dead_steps_threshold = check_positive_int(
            dead_steps_threshold, "dead_steps_threshold")
        super().__init__(latent_dim, kernel_initializer, bias_initializer, **kwargs)
        self.k = k
        self.k_aux = k_aux
        self.dead_steps_threshold = dead_steps_threshold

    # `AffineEncoder`'s variables and the dead-latent counter.
    latent_axes = {**AffineEncoder.latent_axes, "steps_since_fired": ("latent",)}

    def build(self, input_shape):
        super().build(input_shape)
        self.steps_since_fired = self.add_weight(
            name="steps_since_fired", shape=(self.latent_dim,), initializer="zeros",
            dtype="int32", trainable=False,
        )

    def latent_parameters(self):
        """`b_enc` and `steps_since_fired`, both reset to 0."""
        return super().latent_parameters() + [(self.steps_since_fired, 0)]

    def output_names(self):
        return ("latents", "aux_latents")

    def dead_latents(self):
        """`(latent_dim,)` bool: which latents are dead now."""
        return self.steps_since_fired >= self.dead_steps_threshold

    def track_and_aux(self, latents, pre_activation, training):
        """Updates the counter (training only), then returns the AuxK latents."""
        if training:
            self.steps_since_fired.assign(
                steps_since_fired_update(self.steps_since_fired.value, latents))
        return auxk_latents(pre_activation, self.dead_latents(),
                            min(self.k_aux, self.latent_dim))

    # ------------------------------------------------ the sparse training path
    def dead_after_step(self, fired):
        """`(latent_dim,)` bool: the latents dead once this step's firing is counted.

        `fired` is the step's latents (a `SparseLatents` on the sparse
        path). The selection computes it before the step, so that the step
        can skip the AuxK work when no latent is dead (the usual case).
        """
        counter = steps_since_fired_update(self.steps_since_fired.value, fired)
        return counter >= self.dead_steps_threshold

    def aux_extra(self, fired):
        """The entries a `Selection` carries for the AuxK term: `dead`, `aux_needed`."""
        dead = self.dead_after_step(fired)
        return {"dead": dead, "aux_needed": ops.any(dead)}

    def sparse_aux_selection(self, selection):
        """`selection` plus the AuxK slots (`aux_indices`), as the dense path picks them.

        The top `min(k_aux, latent_dim)` pre-activations among the dead
        latents of each row (no gradient); the step calls this only when a
        latent is dead.
        """
        pre_activation = selection.product + as_tensor(self.bias)
        masked = ops.where(selection.extra["dead"], pre_activation,
                           ops.zeros_like(pre_activation))
        return selection.with_extra(aux_indices=top_k_indices(
            masked, min(self.k_aux, self.latent_dim)))

    def sparse_track_and_aux(self, latents, inputs, selection, training):
        """`track_and_aux` on the sparse path: `latents` and the result are `SparseLatents`.

        The AuxK latents take the selection's `aux_indices` slots; a
        selection without them (no dead latent) gives AuxK latents with no
        slot at all (all zero), which cost nothing to decode.
        """
        if training:
            self.steps_since_fired.assign(
                steps_since_fired_update(self.steps_since_fired.value, latents))
        indices = selection.extra.get("aux_indices")
        if indices is None:
            rows = ops.shape(selection.product)[0]
            return SparseLatents(ops.zeros((rows, 0), selection.product.dtype),
                                 ops.zeros((rows, 0), "int32"), self.latent_dim)
        dead = self.dead_latents()
        at_slots = self.pre_activation_at(inputs, selection.product, indices)
        values = ops.relu(ops.where(ops.take(dead, indices, axis=0), at_slots,
                                    ops.zeros_like(at_slots)))
        return SparseLatents(values, indices, self.latent_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"k": self.k, "k_aux": self.k_aux,
                       "dead_steps_threshold": self.dead_steps_threshold})
        return config
