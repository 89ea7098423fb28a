"""The TopK encoder of Gao et al. 2024 (arXiv:2406.04093)."""

import keras
from keras import ops

from gated_sae_layers.layers.auxk_encoder import AuxKEncoder
from gated_sae_layers.layers.top_k_selection import keep_top_k
from gated_sae_layers.sparse.kernels import as_tensor
from gated_sae_layers.sparse.latents import SparseLatents
from gated_sae_layers.sparse.selection import Selection, top_k_indices


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class TopKEncoder(AuxKEncoder):
    """TopK SAE encoder: keep the `k` largest pre-activations of each example.

    With `x_c = x - b_dec`:

    ```
    z     = x_c @ W_enc + b_enc                       # pre-activation
    f     = relu(TopK_k(z))                           # k largest per row, 0 elsewhere
    z_aux = relu(TopK_k_aux(z restricted to dead latents))   # for the AuxK loss
    ```

    Gao et al. 2024, "Scaling and evaluating sparse autoencoders",
    arXiv:2406.04093, eq. 3 and sec. A.2. Every row has at most `k` nonzero
    latents (exactly the `k` largest pre-activations, fewer where some of
    them are <= 0). The sparsity is set by `k`; no sparsity penalty is needed.

    Dead latents are tracked as in `AuxKEncoder`: the non-trainable
    `steps_since_fired` counter is updated on every call with
    `training=True` (inside `fit`), and a latent silent for
    `dead_steps_threshold` steps is dead. `"aux_latents"` feeds the AuxK loss
    (`AuxKResidual`, `AuxKLoss`), which trains dead latents to explain the
    main model's residual.

    Args:
        latent_dim: int, the number of latents `M`.
        k: int, `1 <= k <= latent_dim`, the active latents per example.
        k_aux: int >= 1, the AuxK budget (Gao et al.: 512), capped at
            `latent_dim`.
        dead_steps_threshold: int >= 1, training steps without firing after
            which a latent is dead.
        kernel_initializer: initializer of `W_enc` (`kernel`); the
            `build_*` functions overwrite it with the transposed decoder.
        bias_initializer: initializer of `b_enc` (`bias`).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: float tensor `(..., input_dim)`, the centered input `x - b_dec`.
        training: bool; `True` updates the dead-latent counter.

    Returns:
        A dict with `"latents"` and `"aux_latents"`, both `(..., latent_dim)`
        and non-negative.

    Example:

    >>> import numpy as np
    >>> encoder = TopKEncoder(latent_dim=16, k=3)
    >>> out = encoder(np.random.rand(4, 8).astype("float32"))
    >>> bool((np.asarray(out["latents"]) > 0).sum(axis=1).max() <= 3)
    True
    >>> float(np.asarray(out["aux_latents"]).sum())  # no dead latent yet
    0.0
    """

    def call(self, inputs, training=None):
        pre_activation = self.pre_activation(inputs)
        latents = ops.relu(keep_top_k(pre_activation, self.k))
        aux_latents = self.track_and_aux(latents, pre_activation, training)
        return {"latents": latents, "aux_latents": aux_latents}

    # The sparse path: the k slots of a row are its top k, exactly as `call`
    # picks them, so the sparse step never falls back.
    def sparse_slots(self, cap):
        return self.k

    def sparse_selection(self, inputs, slots):
        product = self.sparse_product(inputs)
        bias = as_tensor(self.bias)
        indices = top_k_indices(product, self.k, bias)
        fired = SparseLatents(ops.take_along_axis(product, indices, axis=1)
                              + ops.take(bias, indices, axis=0), indices, self.latent_dim)
        return Selection(product, indices, extra=self.aux_extra(fired))

    def sparse_call(self, inputs, selection, training=None):
        indices = selection.indices
        latents = SparseLatents(
            ops.relu(self.pre_activation_at(inputs, selection.product, indices)),
            indices, self.latent_dim)
        aux_latents = self.sparse_track_and_aux(latents, inputs, selection, training)
        return {"latents": latents, "aux_latents": aux_latents}
