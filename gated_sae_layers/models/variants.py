"""The SAE variants and `build_sae`.

Moved to gated_sae_layers.models.builders; kept so old imports work.
"""

from gated_sae_layers.models.builders import (
    BUILDERS,
    build_batch_topk_sae,
    build_gated_sae,
    build_jumprelu_sae,
    build_matryoshka_sae,
    build_relu_sae,
    build_sae,
    build_topk_sae,
)

__all__ = [
    "BUILDERS",
    "build_batch_topk_sae",
    "build_gated_sae",
    "build_jumprelu_sae",
    "build_matryoshka_sae",
    "build_relu_sae",
    "build_sae",
    "build_topk_sae",
]
