"""`build_topk_sae`, `build_batch_topk_sae`, `build_matryoshka_sae`.

Moved to gated_sae_layers.models.builders; kept so old imports work.
"""

from gated_sae_layers.models.builders.matryoshka import build_matryoshka_sae
from gated_sae_layers.models.builders.topk import build_batch_topk_sae, build_topk_sae

__all__ = ["build_batch_topk_sae", "build_matryoshka_sae", "build_topk_sae"]
