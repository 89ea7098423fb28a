"""`build_gated_sae`: the gated SAE assembled from the kit's pieces."""

import keras

from gated_sae_layers.layers.decoder_norm_weighting import DecoderNormWeighting
from gated_sae_layers.layers.gated_encoder import GatedEncoder
from gated_sae_layers.losses import AuxReconstruction, ReconstructionLoss, SparsityPenalty
from gated_sae_layers.models import learning_rates
from gated_sae_layers.models.builders import assembly
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder


def build_gated_sae(
    input_dim,
    latent_dim,
    sparsity_coefficient,
    aux_coefficient=1.0,
    remove_parallel_gradient=False,
    encoder_init_scale=0.1,
    aux_trains_decoder=False,
    weight_by_decoder_norm=False,
    decoder_learning_rate_multiplier=1.0,
    name="gated_sae",
    dtype=None,
    output_dim=None,
    skip=False,
):
    """Builds the gated SAE of Rajamanoharan et al. 2024 as a Functional model.

    ```
    pi_gate = (x - b_dec) W_gate + b_gate          f = 1[pi_gate > 0] * relu(pi_mag)
    pi_mag  = (x - b_dec) (W_gate * exp(r_mag)) + b_mag      x_hat = f W_dec + b_dec
    L = ||x - x_hat||^2 + lambda * sum_j relu(pi_gate)_j
        + alpha * ||x - (relu(pi_gate) sg(W_dec) + sg(b_dec))||^2
    ```

    The whole assembly is the few lines below; copy them to make a variant.

    Initialization: the decoder rows are unit vectors and
    `W_gate = encoder_init_scale * W_dec^T`. The default 0.1 is measured:
    at equal budget and matched L0 it recovers 91% of the true directions
    of a hard synthetic instance where the plain tied `W_gate = W_dec^T`
    (`encoder_init_scale=1.0`) recovers 33%,
    and it lowers FVU on MiniLM activations (0.152 against 0.162 at L0 32);
    see `benchmarks/RESULTS.md`, "Training quality against the peers".

    Two choices of SAELens's gated SAE (not the paper's) are options:
    `aux_trains_decoder=True` lets the auxiliary term train `W_dec` and
    `b_dec`; `weight_by_decoder_norm=True` drops the unit-norm constraint,
    starts the decoder rows at norm `encoder_init_scale` (with
    `W_gate = W_dec^T`) and weights each latent's penalty by its decoder
    row norm, `lambda * sum_j relu(pi_gate)_j ||W_dec[j]||`
    (`DecoderNormWeighting`). Both together recover the most directions on
    the synthetic benchmark.

    Args:
        input_dim: int, the width of the activations.
        latent_dim: int, the number of dictionary latents.
        sparsity_coefficient: float >= 0, lambda of `SparsityPenalty`.
        aux_coefficient: float >= 0, alpha of `AuxReconstruction` (the
            paper uses 1).
        remove_parallel_gradient: bool, see `UnitNormDecoder`. Needs the
            unit-norm constraint (`weight_by_decoder_norm=False`).
        encoder_init_scale: float > 0, the scale of the tied initialization
            `W_gate = encoder_init_scale * W_dec^T` (unit-norm rows).
        aux_trains_decoder: bool; `False` (the paper) decodes the auxiliary
            term through `stop_gradient(W_dec)` and `stop_gradient(b_dec)`.
        weight_by_decoder_norm: bool, free decoder rows and a penalty
            weighted by their norms (see above).
        decoder_learning_rate_multiplier: float > 0, or a Keras
            `LearningRateSchedule` of the optimizer's step: how many times
            as far the optimizer steps `W_dec` as the other weights (the
            model's `learning_rate_multipliers`, applied by `compile`). Adam turns
            the `0.1 W_dec^T` encoder columns about 10x as fast as the
            unit-norm decoder rows (an angle proportional to `lr / norm`
            a step). The default 1 is the paper's; the recipe passes
            `gsl.falling_multiplier(steps)`, 5x at the first step falling to
            1x at the last (`docs/training_recipe.md`: held-out MiniLM FVU
            0.141 against 0.152 at L0 32).
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
        `gating_pre_activation` and `aux_reconstruction` (and
        `weighted_gate` when weighting by decoder norm), loss terms
        `reconstruction`, `sparsity`, `aux` and metrics `l0`, `fvu`,
        `dead_features`. Set `model.decoder.bias` to the data's center
        before `fit` (`model.initialize_decoder_bias(x)`) for a good start.

    Example:

    >>> import numpy as np
    >>> import gated_sae_layers as gsl
    >>> model = gsl.build_gated_sae(784, 4096, sparsity_coefficient=3e-4)
    >>> outputs = model.predict_on_batch(np.zeros((2, 784), "float32"))
    >>> {name: tuple(value.shape) for name, value in sorted(outputs.items())}
    {'aux_reconstruction': (2, 784), 'gating_pre_activation': (2, 4096), 'latents': (2, 4096), 'reconstruction': (2, 784)}
    """
    input_dim, latent_dim = assembly.check_dims(input_dim, latent_dim)
    sparsity_coefficient = assembly.check_coefficient(
        sparsity_coefficient, "sparsity_coefficient")
    aux_coefficient = assembly.check_coefficient(aux_coefficient, "aux_coefficient")
    encoder_init_scale = assembly.check_positive(encoder_init_scale, "encoder_init_scale")
    assembly.check_bool(aux_trains_decoder, "aux_trains_decoder")
    assembly.check_bool(weight_by_decoder_norm, "weight_by_decoder_norm")
    decoder_learning_rate_multiplier = learning_rates.check_multiplier(
        decoder_learning_rate_multiplier, "decoder_learning_rate_multiplier")
    if weight_by_decoder_norm and remove_parallel_gradient:
        raise ValueError(
            "`remove_parallel_gradient=True` needs unit-norm decoder rows; "
            "`weight_by_decoder_norm=True` leaves them free. Received both.")

    ends = assembly.DictionaryEnds(                            # reads x - b_dec
        input_dim, latent_dim, output_dim, skip,
        kernel_constraint=None if weight_by_decoder_norm else "unit_norm_rows",
        remove_parallel_gradient=remove_parallel_gradient, dtype=dtype)
    encoder = GatedEncoder(latent_dim, name="encoder", dtype=dtype)

    encoded = encoder(ends.encoder_input)
    latents = encoded["latents"]
    gating_pre_activation = encoded["gating_pre_activation"]
    reconstruction = ends.reconstruct(latents)                 # f W_dec + b_dec
    gate_activations = keras.layers.ReLU(name="gate_relu", dtype=dtype)(
        gating_pre_activation)
    aux_reconstruction = ends.reconstruct(gate_activations, frozen=not aux_trains_decoder)
    outputs = {
        "reconstruction": reconstruction,
        "latents": latents,
        "gating_pre_activation": gating_pre_activation,
        "aux_reconstruction": aux_reconstruction,
    }
    penalized = "gating_pre_activation"                        # relu inside the loss
    if weight_by_decoder_norm:
        penalized = "weighted_gate"                            # relu(pi_gate) ||W_dec||
        outputs[penalized] = DecoderNormWeighting(
            ends.decoder, name="decoder_norm_weighting", dtype=dtype)(gate_activations)

    model = SparseAutoencoder(
        inputs=ends.activations,
        outputs=outputs,
        loss_terms={
            "reconstruction": ReconstructionLoss(),
            penalized: SparsityPenalty(sparsity_coefficient),
            "aux_reconstruction": AuxReconstruction(aux_coefficient),
        },
        metric_terms=assembly.standard_metrics(ends.output_dim, latent_dim),
        learning_rate_multipliers=(
            None if isinstance(decoder_learning_rate_multiplier, float)
            and decoder_learning_rate_multiplier == 1.0
            else {ends.decoder.kernel.path: decoder_learning_rate_multiplier}),
        name=name,
    )
    if weight_by_decoder_norm:                                 # rows at norm s
        ends.decoder.kernel.assign(ends.decoder.kernel * encoder_init_scale)
        ends.initialize_encoder(encoder)                       # W_gate = W_dec^T
    else:
        ends.initialize_encoder(encoder, scale=encoder_init_scale)  # s W_dec^T
    return assembly.record_architecture(
        model, "gated", sparsity_coefficient=sparsity_coefficient,
        aux_coefficient=aux_coefficient, remove_parallel_gradient=remove_parallel_gradient,
        encoder_init_scale=encoder_init_scale, aux_trains_decoder=aux_trains_decoder,
        weight_by_decoder_norm=weight_by_decoder_norm,
        decoder_learning_rate_multiplier=learning_rates.serialize_multiplier(
            decoder_learning_rate_multiplier),
        **ends.record())
