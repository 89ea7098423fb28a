"""The low-level pieces of the sparse training path (`docs/sparse_training.md`).

`SparseLatents` (a latent tensor held as its slots), the custom-gradient
operations that decode, encode and gather over slots (`kernels`), and the
selections that say which latents of a row get a slot (`selection`,
`support`). The
layers use these in their `sparse_call`; `models/sparse_path` runs a model's
graph with them inside the training step.
"""

from gated_sae_layers.sparse.kernels import (
    gather_vector,
    gathered_product,
    sparse_decode,
)
from gated_sae_layers.sparse.latents import SparseLatents
from gated_sae_layers.sparse.selection import Selection, top_k_indices
from gated_sae_layers.sparse.support import support_indices

__all__ = ["Selection", "SparseLatents", "gather_vector", "gathered_product", "sparse_decode",
           "support_indices", "top_k_indices"]
