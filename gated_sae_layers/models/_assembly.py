"""Pieces shared by the `build_*` functions of the SAE variants."""

import keras
from keras import ops

from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.layers.auxk_residual import AuxKResidual
from gated_sae_layers.layers.unit_norm_decoder import UnitNormDecoder
from gated_sae_layers.metrics import L0, DeadFeatures, FractionOfVarianceUnexplained


def check_dims(input_dim, latent_dim):
    return (check_positive_int(input_dim, "input_dim"),
            check_positive_int(latent_dim, "latent_dim"))


def start(input_dim, latent_dim, kernel_constraint="unit_norm_rows", dtype=None):
    """The model input, its decoder and the centered input `x - b_dec`."""
    activations = keras.Input(shape=(input_dim,), name="activations")
    decoder = UnitNormDecoder(latent_dim, input_dim, kernel_constraint=kernel_constraint,
                              name="decoder", dtype=dtype)
    return activations, decoder, decoder(activations, mode="center")


def auxk_residual(activations, decoder, reconstruction, aux_latents, dtype=None):
    """`e - e_hat` of the AuxK loss, `e_hat = z_aux @ W_dec` (no `b_dec`)."""
    aux_prediction = decoder(aux_latents, use_bias=False)
    return AuxKResidual(name="auxk_residual", dtype=dtype)(
        [activations, reconstruction, aux_prediction, aux_latents])


def standard_metrics(input_dim, latent_dim):
    """`metric_terms` logging `l0`, `dead_features` and `fvu`."""
    return {"latents": [L0(), DeadFeatures(latent_dim)],
            "reconstruction": [FractionOfVarianceUnexplained(input_dim)]}


def tie_encoder_to_decoder(encoder, decoder):
    """Tied initialization `W_enc = W_dec^T` (Gao et al. 2024; Conerly et al. 2024)."""
    encoder.input_kernel.assign(ops.transpose(decoder.kernel))
