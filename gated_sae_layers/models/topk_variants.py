"""`build_topk_sae`, `build_batch_topk_sae`, `build_matryoshka_sae`: SAEs with a k budget."""

import numbers

from gated_sae_layers._validation import check_k, check_non_negative_float, check_positive_int
from gated_sae_layers.layers.batch_topk_encoder import BatchTopKEncoder
from gated_sae_layers.layers.prefix_mask import PrefixMask
from gated_sae_layers.layers.topk_encoder import TopKEncoder
from gated_sae_layers.losses import AuxKLoss, ReconstructionLoss
from gated_sae_layers.metrics import FractionOfVarianceUnexplained
from gated_sae_layers.models import _assembly
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder


def _check_auxk(k_aux, dead_steps_threshold, aux_coefficient):
    check_positive_int(k_aux, "k_aux")
    check_positive_int(dead_steps_threshold, "dead_steps_threshold")
    return check_non_negative_float(aux_coefficient, "aux_coefficient")


def _assemble(encoder, input_dim, latent_dim, aux_coefficient, name, prefix_sizes=(),
              dtype=None):
    activations, decoder, centered = _assembly.start(input_dim, latent_dim, dtype=dtype)
    encoded = encoder(centered)
    latents = encoded["latents"]
    reconstruction = decoder(latents)
    outputs = {"reconstruction": reconstruction, "latents": latents,
               "aux_latents": encoded["aux_latents"],
               "aux_residual": _assembly.auxk_residual(
                   activations, decoder, reconstruction, encoded["aux_latents"], dtype)}
    loss_terms = {"reconstruction": ReconstructionLoss(),
                  "aux_residual": AuxKLoss(aux_coefficient)}
    metric_terms = _assembly.standard_metrics(input_dim, latent_dim)
    for size in prefix_sizes:
        output = f"reconstruction_{size}"
        outputs[output] = decoder(
            PrefixMask(size, name=f"prefix_{size}", dtype=dtype)(latents))
        loss_terms[output] = ReconstructionLoss(name=output)
        metric_terms[output] = [FractionOfVarianceUnexplained(input_dim, name=f"fvu_{size}")]
    model = SparseAutoencoder(inputs=activations, outputs=outputs, loss_terms=loss_terms,
                              metric_terms=metric_terms, name=name)
    _assembly.tie_encoder_to_decoder(encoder, decoder)
    return model


def build_topk_sae(input_dim, latent_dim, k, k_aux=512, dead_steps_threshold=1000,
                   aux_coefficient=1 / 32, name="topk_sae", dtype=None):
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
    input_dim, latent_dim = _assembly.check_dims(input_dim, latent_dim)
    k = check_k(k, latent_dim)
    aux_coefficient = _check_auxk(k_aux, dead_steps_threshold, aux_coefficient)
    encoder = TopKEncoder(latent_dim, k, k_aux, dead_steps_threshold, name="encoder",
                          dtype=dtype)
    return _assemble(encoder, input_dim, latent_dim, aux_coefficient, name, dtype=dtype)


def build_batch_topk_sae(input_dim, latent_dim, k, k_aux=512, dead_steps_threshold=1000,
                         aux_coefficient=1 / 32, threshold_momentum=0.99,
                         name="batch_topk_sae", dtype=None):
    """Builds the BatchTopK SAE of Bussmann et al. 2024 (arXiv:2412.06410).

    As `build_topk_sae`, with a `BatchTopKEncoder`: training keeps the
    `batch * k` largest activations of the batch and estimates a threshold;
    inference (`predict`, `evaluate`) applies that threshold per example.

    Args:
        input_dim, latent_dim, k, k_aux, dead_steps_threshold,
        aux_coefficient, name, dtype: as `build_topk_sae`; `k` is the
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
    input_dim, latent_dim = _assembly.check_dims(input_dim, latent_dim)
    k = check_k(k, latent_dim)
    aux_coefficient = _check_auxk(k_aux, dead_steps_threshold, aux_coefficient)
    encoder = BatchTopKEncoder(latent_dim, k, k_aux, dead_steps_threshold,
                               threshold_momentum, name="encoder", dtype=dtype)
    return _assemble(encoder, input_dim, latent_dim, aux_coefficient, name, dtype=dtype)


def _check_prefix_sizes(prefix_sizes, latent_dim):
    if prefix_sizes is None:
        return tuple(s for s in sorted({latent_dim // 16, latent_dim // 4}) if s > 0)
    if (not isinstance(prefix_sizes, (list, tuple)) or not prefix_sizes or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral)
            for s in prefix_sizes)):
        raise TypeError(
            "`prefix_sizes` must be a non-empty list of integers. "
            f"Received: prefix_sizes={prefix_sizes!r}")
    sizes = [int(s) for s in prefix_sizes]
    if sizes != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] > latent_dim:
        raise ValueError(
            "`prefix_sizes` must be strictly increasing integers in "
            f"[1, latent_dim={latent_dim}]. Received: prefix_sizes={prefix_sizes!r}")
    return tuple(s for s in sizes if s < latent_dim)


def build_matryoshka_sae(input_dim, latent_dim, k, prefix_sizes=None, k_aux=512,
                         dead_steps_threshold=1000, aux_coefficient=1 / 32,
                         name="matryoshka_sae", dtype=None):
    """Builds a Matryoshka BatchTopK SAE (Bussmann et al. 2025, arXiv:2503.17547).

    `L = sum_m ||x - x_hat(f_{1..m})||^2 + alpha * L_aux`: every prefix of
    the latents (`PrefixMask`) is decoded by the same decoder, one
    `ReconstructionLoss` per prefix, so the leading latents must
    reconstruct well on their own. The full dictionary is the last prefix.

    Args:
        input_dim, latent_dim, k, k_aux, dead_steps_threshold,
        aux_coefficient, name, dtype: as `build_batch_topk_sae`.
        prefix_sizes: strictly increasing ints in `[1, latent_dim]`, the
            nested dictionary sizes; `latent_dim` is always added. Default:
            `latent_dim // 16` and `latent_dim // 4`.

    Returns:
        A `SparseAutoencoder` with the outputs of `build_batch_topk_sae` plus
        `reconstruction_<m>` per prefix `m < latent_dim`; loss terms
        `reconstruction` (full dictionary), `reconstruction_<m>`, `aux`;
        metrics `l0`, `fvu`, `dead_features`, `fvu_<m>`.

    Example:

    >>> model = build_matryoshka_sae(8, 32, k=4, prefix_sizes=[4, 16])
    >>> [loss.name for loss in model.loss_terms.values()]
    ['reconstruction', 'aux', 'reconstruction_4', 'reconstruction_16']
    """
    input_dim, latent_dim = _assembly.check_dims(input_dim, latent_dim)
    k = check_k(k, latent_dim)
    prefix_sizes = _check_prefix_sizes(prefix_sizes, latent_dim)
    aux_coefficient = _check_auxk(k_aux, dead_steps_threshold, aux_coefficient)
    encoder = BatchTopKEncoder(latent_dim, k, k_aux, dead_steps_threshold, name="encoder",
                               dtype=dtype)
    return _assemble(encoder, input_dim, latent_dim, aux_coefficient, name, prefix_sizes,
                     dtype)
