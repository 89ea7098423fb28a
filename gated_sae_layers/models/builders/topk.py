"""`build_topk_sae` (k per example) and `build_batch_topk_sae` (k per example on average)."""

from gated_sae_layers.layers.batch_topk_encoder import BatchTopKEncoder
from gated_sae_layers.layers.topk_encoder import TopKEncoder
from gated_sae_layers.models.builders import assembly


def build_topk_sae(input_dim, latent_dim, k, k_aux=512, dead_steps_threshold=1000,
                   aux_coefficient=1 / 32, name="topk_sae", dtype=None, output_dim=None,
                   skip=False):
    """Builds the TopK SAE of Gao et al. 2024 (arXiv:2406.04093) with its AuxK loss.

    `L = ||x - x_hat||^2 + alpha * ||e - e_hat||^2`: a `TopKEncoder` keeps
    the `k` largest pre-activations per example; the AuxK term (`AuxKResidual`,
    `AuxKLoss`) lets the top `k_aux` dead latents model the residual `e`.

    Args:
        input_dim: int, the width of the activations.
        latent_dim: int, the number of latents.
        k: int, `1 <= k <= latent_dim`, active latents per example.
        k_aux: int >= 1, the AuxK budget (capped at `latent_dim`).
        dead_steps_threshold: int >= 1, training steps without firing after
            which a latent is dead (Gao et al.: 10M tokens' worth of steps).
        aux_coefficient: float >= 0, alpha (Gao et al.: 1/32).
        name: the model name.
        dtype: `None` (the global policy, `keras.config.dtype_policy()`) or
            the dtype policy of the model's layers, such as
            `"mixed_bfloat16"`. Variables, loss terms and metrics stay
            float32 either way (see `docs/mixed_precision.md`).
        output_dim, skip: `None` and `False` build an SAE; an int
            `output_dim` builds a transcoder of `x` into a target `y` of that
            width (`fit(x, y)`), `skip=True` adds its linear skip
            `x W_skip` (`DictionaryEnds`; `build_transcoder`).

    Returns:
        A `SparseAutoencoder` with outputs `reconstruction`, `latents`,
        `aux_latents`, `aux_residual`, loss terms `reconstruction` and `aux`,
        and metrics `l0`, `fvu`, `dead_features`. `W_enc` starts as `W_dec^T`.

    Example:

    >>> import numpy as np
    >>> model = build_topk_sae(8, 32, k=4)
    >>> out = model.predict_on_batch(np.random.rand(3, 8).astype("float32"))
    >>> int((out["latents"] > 0).sum(axis=1).max()) <= 4
    True
    """
    input_dim, latent_dim = assembly.check_dims(input_dim, latent_dim)
    k = assembly.check_k(k, latent_dim)
    aux_coefficient = assembly.check_auxk_arguments(
        k_aux, dead_steps_threshold, aux_coefficient)
    encoder = TopKEncoder(latent_dim, k, k_aux, dead_steps_threshold, name="encoder",
                          dtype=dtype)
    model = assembly.assemble_k_sparse_sae(encoder, input_dim, latent_dim,
                                           aux_coefficient, name, dtype=dtype,
                                           output_dim=output_dim, skip=skip)
    return assembly.record_architecture(
        model, "topk", k=k, k_aux=k_aux, dead_steps_threshold=dead_steps_threshold,
        aux_coefficient=aux_coefficient, **assembly.transcoder_arguments(output_dim, skip))


def build_batch_topk_sae(input_dim, latent_dim, k, k_aux=512, dead_steps_threshold=1000,
                         aux_coefficient=1 / 32, threshold_momentum=0.99,
                         name="batch_topk_sae", dtype=None, output_dim=None,
                         skip=False):
    """Builds the BatchTopK SAE of Bussmann et al. 2024 (arXiv:2412.06410).

    As `build_topk_sae`, with a `BatchTopKEncoder`: training keeps the
    `batch * k` largest activations of the batch and estimates a threshold;
    inference (`predict`, `evaluate`) applies that threshold per example.

    Args:
        input_dim, latent_dim, k, k_aux, dead_steps_threshold,
        aux_coefficient, name, dtype, output_dim, skip: as `build_topk_sae`;
            `k` is the
            average number of active latents per example.
        threshold_momentum: float in [0, 1), momentum of the threshold's
            running average.

    Returns:
        A `SparseAutoencoder` with the outputs, loss terms and metrics of
        `build_topk_sae`.

    Example:

    >>> import numpy as np
    >>> model = build_batch_topk_sae(8, 32, k=4)
    >>> sorted(model.predict_on_batch(np.ones((2, 8), "float32")))
    ['aux_latents', 'aux_residual', 'latents', 'reconstruction']
    """
    input_dim, latent_dim = assembly.check_dims(input_dim, latent_dim)
    k = assembly.check_k(k, latent_dim)
    aux_coefficient = assembly.check_auxk_arguments(
        k_aux, dead_steps_threshold, aux_coefficient)
    encoder = BatchTopKEncoder(latent_dim, k, k_aux, dead_steps_threshold,
                               threshold_momentum, name="encoder", dtype=dtype)
    model = assembly.assemble_k_sparse_sae(encoder, input_dim, latent_dim,
                                           aux_coefficient, name, dtype=dtype,
                                           output_dim=output_dim, skip=skip)
    return assembly.record_architecture(
        model, "batch_topk", k=k, k_aux=k_aux, dead_steps_threshold=dead_steps_threshold,
        aux_coefficient=aux_coefficient, threshold_momentum=threshold_momentum,
        **assembly.transcoder_arguments(output_dim, skip))
