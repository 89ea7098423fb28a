"""Layers of the gated SAE kit."""

from gated_sae_layers.layers.gated_encoder import GatedEncoder
from gated_sae_layers.layers.unit_norm_decoder import UnitNormDecoder

__all__ = ["GatedEncoder", "UnitNormDecoder"]
