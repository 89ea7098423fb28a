"""`build_matryoshka_sae`: a BatchTopK SAE whose latent prefixes each reconstruct."""

import numbers

from gated_sae_layers.layers.batch_topk_encoder import BatchTopKEncoder
from gated_sae_layers.models.builders import assembly


def check_prefix_sizes(prefix_sizes, latent_dim):
    """Checks the nested dictionary sizes of `build_matryoshka_sae`.

    Args:
        prefix_sizes: `None` (`latent_dim // 16` and `latent_dim // 4`) or
            strictly increasing ints in `[1, latent_dim]`.
        latent_dim: int, the number of latents.

    Returns:
        A tuple of the sizes below `latent_dim` (the full dictionary is
        always the last prefix); raises `TypeError` or `ValueError` otherwise.
    """
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
                         name="matryoshka_sae", dtype=None, output_dim=None,
                         skip=False):
    """Builds a Matryoshka BatchTopK SAE (Bussmann et al. 2025, arXiv:2503.17547).

    `L = sum_m ||x - x_hat(f_{1..m})||^2 + alpha * L_aux`: every prefix of
    the latents (`PrefixMask`) is decoded by the same decoder, one
    `ReconstructionLoss` per prefix, so the leading latents must
    reconstruct well on their own. The full dictionary is the last prefix.

    Args:
        input_dim, latent_dim, k, k_aux, dead_steps_threshold,
        aux_coefficient, name, dtype, output_dim, skip: as
            `build_batch_topk_sae`.
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
    input_dim, latent_dim = assembly.check_dims(input_dim, latent_dim)
    k = assembly.check_k(k, latent_dim)
    prefix_sizes = check_prefix_sizes(prefix_sizes, latent_dim)
    aux_coefficient = assembly.check_auxk_arguments(
        k_aux, dead_steps_threshold, aux_coefficient)
    encoder = BatchTopKEncoder(latent_dim, k, k_aux, dead_steps_threshold, name="encoder",
                               dtype=dtype)
    model = assembly.assemble_k_sparse_sae(encoder, input_dim, latent_dim,
                                           aux_coefficient, name, prefix_sizes, dtype,
                                           output_dim=output_dim, skip=skip)
    return assembly.record_architecture(
        model, "matryoshka", k=k, prefix_sizes=prefix_sizes, k_aux=k_aux,
        dead_steps_threshold=dead_steps_threshold, aux_coefficient=aux_coefficient,
        **assembly.transcoder_arguments(output_dim, skip))
