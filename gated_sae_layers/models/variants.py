"""The SAE variants built from the kit's pieces, and `build_sae`, one entry point for all.

| architecture  | encoder            | loss terms (logged names)                    |
|---------------|--------------------|----------------------------------------------|
| `gated`       | `GatedEncoder`     | reconstruction, sparsity, aux                |
| `relu`        | `ReLUEncoder`      | reconstruction, sparsity (L1)                |
| `topk`        | `TopKEncoder`      | reconstruction, aux (AuxK)                   |
| `batch_topk`  | `BatchTopKEncoder` | reconstruction, aux (AuxK)                   |
| `jumprelu`    | `JumpReLUEncoder`  | reconstruction, sparsity (L0)                |
| `matryoshka`  | `BatchTopKEncoder` | reconstruction, reconstruction_<m>, aux      |

Every model shares `UnitNormDecoder`, `ReconstructionLoss` and the metrics
`l0`, `fvu`, `dead_features`, and has outputs `reconstruction` and `latents`.
"""

import inspect

from gated_sae_layers._validation import check_non_negative_float
from gated_sae_layers.layers.decoder_norm_weighting import DecoderNormWeighting
from gated_sae_layers.layers.jumprelu_encoder import JumpReLUEncoder
from gated_sae_layers.layers.relu_encoder import ReLUEncoder
from gated_sae_layers.losses import L0Penalty, L1Penalty, ReconstructionLoss
from gated_sae_layers.models import _assembly
from gated_sae_layers.models.gated_sae import build_gated_sae
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder
from gated_sae_layers.models.topk_variants import (
    build_batch_topk_sae,
    build_matryoshka_sae,
    build_topk_sae,
)


def build_relu_sae(input_dim, latent_dim, sparsity_coefficient,
                   weight_by_decoder_norm=False, name="relu_sae", dtype=None):
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

    Returns:
        A `SparseAutoencoder` with outputs `reconstruction`, `latents` (and
        `weighted_latents` when weighting), loss terms `reconstruction`,
        `sparsity` and metrics `l0`, `fvu`, `dead_features`.

    Example:

    >>> model = build_relu_sae(8, 32, sparsity_coefficient=1e-3)
    >>> sorted(loss.name for loss in model.loss_terms.values())
    ['reconstruction', 'sparsity']
    """
    input_dim, latent_dim = _assembly.check_dims(input_dim, latent_dim)
    sparsity_coefficient = check_non_negative_float(
        sparsity_coefficient, "sparsity_coefficient")
    if not isinstance(weight_by_decoder_norm, bool):
        raise TypeError(
            "`weight_by_decoder_norm` must be a bool. Received: "
            f"weight_by_decoder_norm={weight_by_decoder_norm!r}")
    activations, decoder, centered = _assembly.start(
        input_dim, latent_dim,
        kernel_constraint=None if weight_by_decoder_norm else "unit_norm_rows",
        dtype=dtype)
    encoder = ReLUEncoder(latent_dim, name="encoder", dtype=dtype)
    latents = encoder(centered)["latents"]
    outputs = {"reconstruction": decoder(latents), "latents": latents}
    penalized = "latents"
    if weight_by_decoder_norm:
        penalized = "weighted_latents"
        outputs[penalized] = DecoderNormWeighting(
            decoder, name="decoder_norm_weighting", dtype=dtype)(latents)
    model = SparseAutoencoder(
        inputs=activations, outputs=outputs,
        loss_terms={"reconstruction": ReconstructionLoss(),
                    penalized: L1Penalty(sparsity_coefficient)},
        metric_terms=_assembly.standard_metrics(input_dim, latent_dim), name=name)
    _assembly.tie_encoder_to_decoder(encoder, decoder)
    return model


def build_jumprelu_sae(input_dim, latent_dim, sparsity_coefficient,
                       initial_threshold=0.001, bandwidth=0.001, name="jumprelu_sae",
                       dtype=None):
    """Builds the JumpReLU SAE of Rajamanoharan et al. 2024 (arXiv:2407.14435).

    `L = ||x - x_hat||^2 + lambda * sum_j H(z_j - theta_j)`: latents fire
    above a learned per-latent threshold; the L0 penalty and the thresholds
    train through the straight-through pseudo-derivatives of
    `JumpReLUEncoder` (bandwidth `eps`).

    Args:
        input_dim: int, the width of the activations.
        latent_dim: int, the number of latents.
        sparsity_coefficient: float >= 0, lambda of `L0Penalty`.
        initial_threshold: float > 0, `theta` at initialization.
        bandwidth: float > 0, `eps` of the pseudo-derivatives; keep it on
            the scale of the pre-activations.
        name: the model name.
        dtype: `None` (the global policy, `keras.config.dtype_policy()`) or
            the dtype policy of the model's layers, such as
            `"mixed_bfloat16"`. Variables, loss terms and metrics stay
            float32 either way (see `docs/mixed_precision.md`).

    Thresholds learn only from pre-activations within `eps / 2` of them,
    and Adam moves `log_threshold` by at most about the learning rate per
    step. With the paper's 0.001 on data whose pre-activations are of
    order 0.1-1 (sklearn digits in [0, 1]: 2,300 steps of Adam(3e-3)) the
    thresholds went from 0.001 to 0.002 and L0 rose from 57 to 108 of 128;
    with `initial_threshold = bandwidth = 0.05` L0 fell from 46 to 31 in
    290 steps. Set both to the scale of the pre-activations, or train for
    far longer (the paper runs 100,000s of steps).

    Returns:
        A `SparseAutoencoder` with outputs `reconstruction`, `latents`,
        `active_latents`, loss terms `reconstruction`, `sparsity` and
        metrics `l0`, `fvu`, `dead_features`.

    Example:

    >>> model = build_jumprelu_sae(8, 32, sparsity_coefficient=1e-2)
    >>> sorted(model.loss_terms)
    ['active_latents', 'reconstruction']
    """
    input_dim, latent_dim = _assembly.check_dims(input_dim, latent_dim)
    sparsity_coefficient = check_non_negative_float(
        sparsity_coefficient, "sparsity_coefficient")
    activations, decoder, centered = _assembly.start(input_dim, latent_dim, dtype=dtype)
    encoder = JumpReLUEncoder(latent_dim, initial_threshold, bandwidth, name="encoder",
                              dtype=dtype)
    encoded = encoder(centered)
    model = SparseAutoencoder(
        inputs=activations,
        outputs={"reconstruction": decoder(encoded["latents"]),
                 "latents": encoded["latents"],
                 "active_latents": encoded["active_latents"]},
        loss_terms={"reconstruction": ReconstructionLoss(),
                    "active_latents": L0Penalty(sparsity_coefficient)},
        metric_terms=_assembly.standard_metrics(input_dim, latent_dim), name=name)
    _assembly.tie_encoder_to_decoder(encoder, decoder)
    return model


BUILDERS = {
    "gated": build_gated_sae,
    "relu": build_relu_sae,
    "topk": build_topk_sae,
    "batch_topk": build_batch_topk_sae,
    "jumprelu": build_jumprelu_sae,
    "matryoshka": build_matryoshka_sae,
}


def build_sae(architecture, input_dim, latent_dim, **kwargs):
    """Builds any SAE variant of the kit by name.

    Args:
        architecture: one of `"gated"`, `"relu"`, `"jumprelu"` (these take
            `sparsity_coefficient=`), `"topk"`, `"batch_topk"` (these take
            `k=`), `"matryoshka"` (takes `k=` and `prefix_sizes=`).
        input_dim: int, the width of the activations.
        latent_dim: int, the number of latents.
        **kwargs: the other arguments of the builder:
            `build_gated_sae(input_dim, latent_dim, sparsity_coefficient,
            aux_coefficient=1.0, remove_parallel_gradient=False)`,
            `build_relu_sae(..., sparsity_coefficient, weight_by_decoder_norm=False)`,
            `build_jumprelu_sae(..., sparsity_coefficient, initial_threshold=1e-3,
            bandwidth=1e-3)`, `build_topk_sae(..., k, k_aux=512,
            dead_steps_threshold=1000, aux_coefficient=1/32)`,
            `build_batch_topk_sae(...` the same `, threshold_momentum=0.99)`,
            `build_matryoshka_sae(..., k, prefix_sizes=None, k_aux=512,
            dead_steps_threshold=1000, aux_coefficient=1/32)`; each takes
            `name` and `dtype` (a dtype policy such as `"mixed_bfloat16"`).

    Returns:
        A `SparseAutoencoder` whose outputs include `reconstruction` and
        `latents` and whose logs include `loss`, `reconstruction`, the
        variant's other terms, `l0`, `fvu` and `dead_features`.

    Example:

    >>> model = build_sae("topk", input_dim=8, latent_dim=32, k=4)
    >>> type(model.encoder).__name__
    'TopKEncoder'
    >>> build_sae("vanilla", 8, 32)
    Traceback (most recent call last):
    ...
    ValueError: `architecture` must be one of ['gated', 'relu', 'topk', 'batch_topk', 'jumprelu', 'matryoshka']. Received: architecture='vanilla'
    """
    if not isinstance(architecture, str) or architecture not in BUILDERS:
        raise ValueError(
            f"`architecture` must be one of {list(BUILDERS)}. "
            f"Received: architecture={architecture!r}")
    builder = BUILDERS[architecture]
    parameters = inspect.signature(builder).parameters
    accepted = [p for p in parameters if p not in ("input_dim", "latent_dim")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"build_sae({architecture!r}, ...) does not take {unknown}; it takes "
            f"{accepted}. Received: {', '.join(f'{k}={kwargs[k]!r}' for k in unknown)}")
    missing = [p for p in accepted if parameters[p].default is inspect.Parameter.empty
               and p not in kwargs]
    if missing:
        raise TypeError(
            f"build_sae({architecture!r}, ...) needs {missing}. Received: "
            f"kwargs={kwargs!r}")
    return builder(input_dim, latent_dim, **kwargs)
