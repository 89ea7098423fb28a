"""Interoperability: SAELens folders both ways, sparsify and dictionary_learning in.

Safetensors only, no pickle: `save_sae` writes a SAELens 6.x folder,
`load_sae` reads SAELens, sparsify and converted dictionary_learning folders
into an ordinary `SparseAutoencoder` (see `docs/interop.md`). Transcoders too:
SAELens's four transcoders both ways, sparsify's in (`_transcoders`).
"""

from gated_sae_layers.interop.dictionary_learning import load_dictionary_learning
from gated_sae_layers.interop.saelens import load_feature_density, load_sae, save_sae
from gated_sae_layers.interop.sparsify import load_sparsify

__all__ = ["load_dictionary_learning", "load_feature_density", "load_sae",
           "load_sparsify", "save_sae"]
