"""gated-sae-layers: composable Keras 3 pieces for sparse dictionary learning.

`import gated_sae_layers` registers every layer, loss, metric, constraint,
schedule and model class with Keras, so `.keras` files saved with them load
with `keras.saving.load_model(path)` (safe mode included).
"""

from gated_sae_layers.callbacks import DecoderNormalizer, SparsityWarmup
from gated_sae_layers.compat.gated_sae_tf import GatedSAE
from gated_sae_layers.constraints import UnitNormRows
from gated_sae_layers.dashboard import ImageContext, TokenContext, feature_dashboard
from gated_sae_layers.distribution import latent_layout_map, latent_parallel
from gated_sae_layers.layers import (
    AffineEncoder,
    AuxKEncoder,
    AuxKPrediction,
    AuxKResidual,
    BatchTopKEncoder,
    DecoderNormWeighting,
    GatedEncoder,
    JumpReLUEncoder,
    PrefixMask,
    ReLUEncoder,
    SkipConnection,
    SparseEncoder,
    TopKEncoder,
    UnitNormDecoder,
)
from gated_sae_layers.losses import (
    AuxKLoss,
    AuxKTargetLoss,
    AuxReconstruction,
    CoefficientLoss,
    L0Penalty,
    L1Penalty,
    ReconstructionLoss,
    SparsityLoss,
    SparsityPenalty,
)
from gated_sae_layers.evaluation import (
    SplicedEvaluation,
    core_metrics,
    evaluate_sae,
    k_sparse_probe,
    spliced_metrics,
)
from gated_sae_layers.evaluation.analysis import (
    decoder_sharpness,
    feature_density,
    relative_reconstruction_bias,
    sparsity_report,
)
from gated_sae_layers.activations.stream import paired_dataset
from gated_sae_layers.interop import (
    load_dictionary_learning,
    load_sae,
    load_sparsify,
    save_sae,
)
from gated_sae_layers.metrics import (
    L0,
    DeadFeatures,
    FractionOfVarianceUnexplained,
    LayerFractionOfVarianceUnexplained,
    RelativeReconstructionBias,
)
from gated_sae_layers.models.folding import fold_normalization
from gated_sae_layers.models.memory import shapes_only_model, train_step_memory
from gated_sae_layers.models.builders import (
    ARCHITECTURES,
    Architecture,
    build_batch_topk_sae,
    build_crosscoder,
    build_gated_sae,
    build_jumprelu_sae,
    build_matryoshka_sae,
    build_relu_sae,
    build_sae,
    build_topk_sae,
    build_transcoder,
    crosscoder_decoder_norms,
    get_architecture,
    register_architecture,
)
from gated_sae_layers.models.learning_rates import falling_multiplier
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder
from gated_sae_layers.plots import (
    plot_decoder_gallery,
    plot_feature_density,
    plot_feature_gallery,
)
from gated_sae_layers.resampling import DeadLatentResampler
from gated_sae_layers.schedules import WarmupCosineDecay, WarmupStableDecay
from gated_sae_layers.sparse import SparseLatents
from gated_sae_layers.sparsity_control import TargetL0

from gated_sae_layers._version import __version__  # noqa: E402, F401

__all__ = [
    "ARCHITECTURES",
    "AffineEncoder",
    "Architecture",
    "AuxKEncoder",
    "AuxKLoss",
    "AuxKPrediction",
    "AuxKResidual",
    "AuxKTargetLoss",
    "AuxReconstruction",
    "BatchTopKEncoder",
    "CoefficientLoss",
    "DeadFeatures",
    "DeadLatentResampler",
    "DecoderNormWeighting",
    "DecoderNormalizer",
    "FractionOfVarianceUnexplained",
    "GatedEncoder",
    "GatedSAE",
    "ImageContext",
    "JumpReLUEncoder",
    "L0",
    "L0Penalty",
    "L1Penalty",
    "LayerFractionOfVarianceUnexplained",
    "PrefixMask",
    "ReLUEncoder",
    "ReconstructionLoss",
    "RelativeReconstructionBias",
    "SkipConnection",
    "SparseAutoencoder",
    "SparseEncoder",
    "SparseLatents",
    "SparsityLoss",
    "SparsityPenalty",
    "SparsityWarmup",
    "SplicedEvaluation",
    "TargetL0",
    "TokenContext",
    "TopKEncoder",
    "UnitNormDecoder",
    "UnitNormRows",
    "WarmupCosineDecay",
    "WarmupStableDecay",
    "build_batch_topk_sae",
    "build_crosscoder",
    "build_gated_sae",
    "build_jumprelu_sae",
    "build_matryoshka_sae",
    "build_relu_sae",
    "build_sae",
    "build_topk_sae",
    "build_transcoder",
    "core_metrics",
    "crosscoder_decoder_norms",
    "decoder_sharpness",
    "evaluate_sae",
    "falling_multiplier",
    "feature_dashboard",
    "feature_density",
    "fold_normalization",
    "get_architecture",
    "k_sparse_probe",
    "latent_layout_map",
    "latent_parallel",
    "load_dictionary_learning",
    "load_sae",
    "load_sparsify",
    "paired_dataset",
    "plot_decoder_gallery",
    "plot_feature_density",
    "plot_feature_gallery",
    "register_architecture",
    "relative_reconstruction_bias",
    "save_sae",
    "shapes_only_model",
    "sparsity_report",
    "spliced_metrics",
    "train_step_memory",
]
