"""`build_relu_sae`: the standard ReLU SAE with an L1 penalty."""

from gated_sae_layers.layers.decoder_norm_weighting import DecoderNormWeighting
from gated_sae_layers.layers.relu_encoder import ReLUEncoder
from gated_sae_layers.losses import L1Penalty, ReconstructionLoss
from gated_sae_layers.models.builders import assembly
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder


def build_relu_sae(input_dim, latent_dim, sparsity_coefficient,
                   weight_by_decoder_norm=False, name="relu_sae", dtype=None,
                   output_dim=None, skip=False):
    """Builds the standard ReLU SAE with an L1 penalty (the gated paper's baseline).

    `L = ||x - x_hat||^2 + lambda * sum_j f_j` with `f = relu(x_c W_enc + b_enc)`
    (Bricken et al. 2023; Rajamanoharan et al. 2024, arXiv:2404.16014, eq. 2).
    With `weight_by_decoder_norm=True` the penalty is
    `lambda * sum_j f_j ||W_dec,j||` and the decoder rows are left free (no
    unit-norm constraint), as in Anthropic's April 2024 update.

    Args:
        input_dim: int, the width of the activations.
        latent_dim: int, the number of latents.
        sparsity_coefficient: float >= 0, lambda of `L1Penalty`.
        weight_by_decoder_norm: bool, weight each latent's penalty by its
            decoder row norm (`DecoderNormWeighting`) and drop the
            decoder's unit-norm constraint.
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
        A `SparseAutoencoder` with outputs `reconstruction`, `latents` (and
        `weighted_latents` when weighting), loss terms `reconstruction`,
        `sparsity` and metrics `l0`, `fvu`, `dead_features`.

    Example:

    >>> model = build_relu_sae(8, 32, sparsity_coefficient=1e-3)
    >>> sorted(loss.name for loss in model.loss_terms.values())
    ['reconstruction', 'sparsity']
    """
    input_dim, latent_dim = assembly.check_dims(input_dim, latent_dim)
    sparsity_coefficient = assembly.check_coefficient(
        sparsity_coefficient, "sparsity_coefficient")
    assembly.check_bool(weight_by_decoder_norm, "weight_by_decoder_norm")
    ends = assembly.DictionaryEnds(
        input_dim, latent_dim, output_dim, skip,
        kernel_constraint=None if weight_by_decoder_norm else "unit_norm_rows",
        dtype=dtype)
    encoder = ReLUEncoder(latent_dim, name="encoder", dtype=dtype)
    latents = encoder(ends.encoder_input)["latents"]
    outputs = {"reconstruction": ends.reconstruct(latents), "latents": latents}
    penalized = "latents"
    if weight_by_decoder_norm:
        penalized = "weighted_latents"
        outputs[penalized] = DecoderNormWeighting(
            ends.decoder, name="decoder_norm_weighting", dtype=dtype)(latents)
    model = SparseAutoencoder(
        inputs=ends.activations, outputs=outputs,
        loss_terms={"reconstruction": ReconstructionLoss(),
                    penalized: L1Penalty(sparsity_coefficient)},
        metric_terms=assembly.standard_metrics(ends.output_dim, latent_dim), name=name)
    ends.initialize_encoder(encoder)
    return assembly.record_architecture(
        model, "relu", sparsity_coefficient=sparsity_coefficient,
        weight_by_decoder_norm=weight_by_decoder_norm, **ends.record())
