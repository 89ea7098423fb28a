"""SAEBench-lite: evaluations of a trained SAE that need no LLM.

* `core_metrics`: sparsity, reconstruction fidelity, feature density and
  its histogram, decoder geometry (`core.py`, `geometry.py`);
* `spliced_metrics`: the host model's loss recovered and KL with the SAE
  spliced in, against zero and mean ablation (`spliced.py`);
* `k_sparse_probe`: held-out accuracy of probes on the `k` most
  class-selective latents, beside a probe on the raw activations
  (`probing.py`; needs scikit-learn, the `data` extra);
* `evaluate_sae`: all that applies, in one flat dict, optionally to
  TensorBoard (`report.py`, `tensorboard.py`);
* `SplicedEvaluation`: a callback running `spliced_metrics` while the SAE
  trains (`callback.py`);
* `analysis`: the `gated-sae-tf` style analysis of a trained SAE
  (`sparsity_report`, `feature_density`, `relative_reconstruction_bias`,
  `decoder_sharpness`, `fraction_of_variance_unexplained`, `encode_all`).

Rows are checked, batched and summed by `gated_sae_layers.activations.rows`.

`gated-sae evaluate` (`gated_sae_layers/cli/evaluate.py`) runs it on a store.
"""

from gated_sae_layers.evaluation import analysis
from gated_sae_layers.evaluation.callback import SplicedEvaluation
from gated_sae_layers.evaluation.core import (
    DENSITY_BIN_EDGES, core_metrics, density_histogram)
from gated_sae_layers.evaluation.geometry import (
    encoder_decoder_cosine, max_decoder_cosine)
from gated_sae_layers.evaluation.probing import k_sparse_probe, stratified_split
from gated_sae_layers.evaluation.report import evaluate_sae
from gated_sae_layers.evaluation.spliced import kl_divergence, spliced_metrics
from gated_sae_layers.evaluation.tensorboard import create_writer, write_metrics

__all__ = [
    "DENSITY_BIN_EDGES", "SplicedEvaluation", "core_metrics", "create_writer",
    "density_histogram", "encoder_decoder_cosine", "evaluate_sae", "k_sparse_probe",
    "kl_divergence", "max_decoder_cosine", "spliced_metrics", "stratified_split",
    "write_metrics",
]
