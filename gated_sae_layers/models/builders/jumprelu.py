"""`build_jumprelu_sae`: the JumpReLU SAE with an L0 penalty."""

from gated_sae_layers.layers.jumprelu_encoder import JumpReLUEncoder
from gated_sae_layers.losses import L0Penalty, ReconstructionLoss
from gated_sae_layers.models.builders import assembly
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder


def build_jumprelu_sae(input_dim, latent_dim, sparsity_coefficient,
                       initial_threshold=0.001, bandwidth=0.001, name="jumprelu_sae",
                       dtype=None, output_dim=None, skip=False):
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
        output_dim, skip: `None` and `False` build an SAE; an int
            `output_dim` builds a transcoder of `x` into a target `y` of that
            width (`fit(x, y)`), `skip=True` adds its linear skip
            `x W_skip` (`DictionaryEnds`; `build_transcoder`).

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
    input_dim, latent_dim = assembly.check_dims(input_dim, latent_dim)
    sparsity_coefficient = assembly.check_coefficient(
        sparsity_coefficient, "sparsity_coefficient")
    ends = assembly.DictionaryEnds(input_dim, latent_dim, output_dim, skip, dtype=dtype)
    encoder = JumpReLUEncoder(latent_dim, initial_threshold, bandwidth, name="encoder",
                              dtype=dtype)
    encoded = encoder(ends.encoder_input)
    model = SparseAutoencoder(
        inputs=ends.activations,
        outputs={"reconstruction": ends.reconstruct(encoded["latents"]),
                 "latents": encoded["latents"],
                 "active_latents": encoded["active_latents"]},
        loss_terms={"reconstruction": ReconstructionLoss(),
                    "active_latents": L0Penalty(sparsity_coefficient)},
        metric_terms=assembly.standard_metrics(ends.output_dim, latent_dim), name=name)
    ends.initialize_encoder(encoder)
    return assembly.record_architecture(
        model, "jumprelu", sparsity_coefficient=sparsity_coefficient,
        initial_threshold=initial_threshold, bandwidth=bandwidth, **ends.record())
