"""Layers of the SAE kit: encoders of every variant and the shared decoder."""

from gated_sae_layers.layers.affine_encoder import AffineEncoder
from gated_sae_layers.layers.auxk_encoder import AuxKEncoder
from gated_sae_layers.layers.auxk_residual import AuxKPrediction, AuxKResidual
from gated_sae_layers.layers.base import SparseEncoder
from gated_sae_layers.layers.batch_topk_encoder import BatchTopKEncoder
from gated_sae_layers.layers.decoder_norm_weighting import DecoderNormWeighting
from gated_sae_layers.layers.gated_encoder import GatedEncoder
from gated_sae_layers.layers.jumprelu_encoder import JumpReLUEncoder
from gated_sae_layers.layers.prefix_mask import PrefixMask
from gated_sae_layers.layers.relu_encoder import ReLUEncoder
from gated_sae_layers.layers.skip_connection import SkipConnection
from gated_sae_layers.layers.topk_encoder import TopKEncoder
from gated_sae_layers.layers.unit_norm_decoder import UnitNormDecoder

__all__ = [
    "AffineEncoder", "AuxKEncoder", "AuxKPrediction", "AuxKResidual",
    "BatchTopKEncoder", "DecoderNormWeighting", "GatedEncoder", "JumpReLUEncoder",
    "PrefixMask", "ReLUEncoder", "SkipConnection", "SparseEncoder", "TopKEncoder",
    "UnitNormDecoder",
]
