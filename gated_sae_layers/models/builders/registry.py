"""`BUILDERS` and `build_sae`: every SAE variant of the kit by name."""

import inspect

from gated_sae_layers.models.builders.gated import build_gated_sae
from gated_sae_layers.models.builders.jumprelu import build_jumprelu_sae
from gated_sae_layers.models.builders.matryoshka import build_matryoshka_sae
from gated_sae_layers.models.builders.relu import build_relu_sae
from gated_sae_layers.models.builders.topk import build_batch_topk_sae, build_topk_sae

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
            aux_coefficient=1.0, remove_parallel_gradient=False,
            encoder_init_scale=0.1, aux_trains_decoder=False,
            weight_by_decoder_norm=False)`,
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
