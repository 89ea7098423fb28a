"""`build_gated_sae`: the gated SAE assembled from the kit's pieces."""

import keras

from gated_sae_layers.layers.gated_encoder import GatedEncoder
from gated_sae_layers.losses import AuxReconstruction, ReconstructionLoss, SparsityPenalty
from gated_sae_layers.models.builders import assembly
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder


def build_gated_sae(
    input_dim,
    latent_dim,
    sparsity_coefficient,
    aux_coefficient=1.0,
    remove_parallel_gradient=False,
    name="gated_sae",
    dtype=None,
):
    """Builds the gated SAE of Rajamanoharan et al. 2024 as a Functional model.

    The whole assembly is the few lines below; copy them to make a variant.

    Args:
        input_dim: int, the width of the activations.
        latent_dim: int, the number of dictionary latents.
        sparsity_coefficient: float >= 0, lambda of `SparsityPenalty`.
        aux_coefficient: float >= 0, alpha of `AuxReconstruction` (the
            paper uses 1).
        remove_parallel_gradient: bool, see `UnitNormDecoder`.
        name: the model name.
        dtype: `None` (the global policy, `keras.config.dtype_policy()`) or
            the dtype policy of the model's layers, such as
            `"mixed_bfloat16"`. Variables, loss terms and metrics stay
            float32 either way (see `docs/mixed_precision.md`).

    Returns:
        A `SparseAutoencoder` with outputs `reconstruction`, `latents`,
        `gating_pre_activation` and `aux_reconstruction`, loss terms
        `reconstruction`, `sparsity`, `aux` and metrics `l0`, `fvu`,
        `dead_features`. `W_gate` starts as the transposed decoder (tied
        initialization); set `model.decoder.bias` to the data mean before
        `fit` for a good start.

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

    activations, decoder, centered = assembly.sae_input_and_decoder(   # x - b_dec
        input_dim, latent_dim, remove_parallel_gradient=remove_parallel_gradient,
        dtype=dtype)
    encoder = GatedEncoder(latent_dim, name="encoder", dtype=dtype)

    encoded = encoder(centered)
    latents = encoded["latents"]
    gating_pre_activation = encoded["gating_pre_activation"]
    reconstruction = decoder(latents)                          # f W_dec + b_dec
    gate_activations = keras.layers.ReLU(name="gate_relu", dtype=dtype)(
        gating_pre_activation)
    aux_reconstruction = decoder(gate_activations, mode="frozen")

    model = SparseAutoencoder(
        inputs=activations,
        outputs={
            "reconstruction": reconstruction,
            "latents": latents,
            "gating_pre_activation": gating_pre_activation,
            "aux_reconstruction": aux_reconstruction,
        },
        loss_terms={
            "reconstruction": ReconstructionLoss(),
            "gating_pre_activation": SparsityPenalty(sparsity_coefficient),
            "aux_reconstruction": AuxReconstruction(aux_coefficient),
        },
        metric_terms=assembly.standard_metrics(input_dim, latent_dim),
        name=name,
    )
    assembly.tie_encoder_to_decoder(encoder, decoder)           # W_gate = W_dec^T
    return model
