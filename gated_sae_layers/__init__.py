"""gated-sae-layers: composable Keras 3 pieces for sparse dictionary learning.

`import gated_sae_layers` registers every layer, loss, metric, constraint,
schedule and model class with Keras, so `.keras` files saved with them load
with `keras.saving.load_model(path)` (safe mode included).
"""

from gated_sae_layers.analysis import (
    decoder_sharpness,
    feature_density,
    relative_reconstruction_bias,
    sparsity_report,
)
from gated_sae_layers.callbacks import DecoderNormalizer, SparsityWarmup
from gated_sae_layers.constraints import UnitNormRows
from gated_sae_layers.layers import GatedEncoder, UnitNormDecoder
from gated_sae_layers.losses import AuxReconstruction, ReconstructionLoss, SparsityPenalty
from gated_sae_layers.metrics import (
    L0,
    DeadFeatures,
    FractionOfVarianceUnexplained,
    RelativeReconstructionBias,
)
from gated_sae_layers.models.gated_sae import build_gated_sae
from gated_sae_layers.models.seed_compat import GatedSAE
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder
from gated_sae_layers.plots import (
    plot_decoder_gallery,
    plot_feature_density,
    plot_feature_gallery,
)
from gated_sae_layers.resampling import DeadLatentResampler
from gated_sae_layers.schedules import WarmupCosineDecay

__version__ = "0.1.0"

__all__ = [
    "AuxReconstruction",
    "DeadFeatures",
    "DeadLatentResampler",
    "DecoderNormalizer",
    "FractionOfVarianceUnexplained",
    "GatedEncoder",
    "GatedSAE",
    "L0",
    "ReconstructionLoss",
    "RelativeReconstructionBias",
    "SparseAutoencoder",
    "SparsityPenalty",
    "SparsityWarmup",
    "UnitNormDecoder",
    "UnitNormRows",
    "WarmupCosineDecay",
    "build_gated_sae",
    "decoder_sharpness",
    "feature_density",
    "plot_decoder_gallery",
    "plot_feature_density",
    "plot_feature_gallery",
    "relative_reconstruction_bias",
    "sparsity_report",
]
