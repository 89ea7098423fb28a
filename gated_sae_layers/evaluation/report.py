"""`evaluate_sae`: every evaluation that applies, in one flat dict."""

from gated_sae_layers.activations import rows as activation_rows
from gated_sae_layers.evaluation.core import core_metrics
from gated_sae_layers.evaluation.probing import plan_probe, run_probe
from gated_sae_layers.evaluation.spliced import check_spliced_arguments, spliced_metrics
from gated_sae_layers.evaluation.tensorboard import check_log_dir, write_metrics

DEFAULT_KS = (1, 2, 5, 20)
SPLICE_REQUIRED = ("model", "layer", "inputs", "loss_fn")
SPLICE_OPTIONAL = ("targets", "batch_size", "outputs", "input_layer")


def _check_splice(splice, sae):
    if not isinstance(splice, dict):
        raise TypeError("`splice` must be None or a dict with keys "
                        f"{SPLICE_REQUIRED}. Received: splice={splice!r:.200}")
    missing = [k for k in SPLICE_REQUIRED if k not in splice]
    unknown = sorted(set(splice) - set(SPLICE_REQUIRED + SPLICE_OPTIONAL))
    if missing or unknown:
        raise ValueError(
            f"`splice` needs the keys {list(SPLICE_REQUIRED)} and may have "
            f"{list(SPLICE_OPTIONAL)}. Received: missing {missing}, unknown {unknown}")
    check_spliced_arguments(splice["model"], splice["layer"], splice["inputs"],
                            splice["loss_fn"], **_splice_options(splice), sae=sae)
    return splice


def _splice_options(splice):
    return {k: splice[k] for k in SPLICE_OPTIONAL if k in splice}


def evaluate_sae(model, x, labels=None, splice=None, log_dir=None, step=0,
                 targets=None):
    """SAEBench-lite: core metrics, plus probing and splicing when they apply.

    * always `core_metrics(model, x)`: L0, FVU, explained variance, cosine
      similarity, shrinkage, dead and dense fractions, feature density and
      its log10 histogram, decoder and encoder-decoder cosines;
    * with `labels` (one per row of `x`), `k_sparse_probe(model, x, labels)`
      for `k` in `(1, 2, 5, 20)` up to `latent_dim`;
    * with `splice=dict(model=..., layer=..., inputs=..., loss_fn=...)`
      (and optionally `targets`, `batch_size`, `outputs`, and for a
      transcoder `input_layer`),
      `spliced_metrics(splice["model"], splice["layer"], model, ...)`: the
      downstream loss recovered and KL with the SAE in place of the layer.

    With `log_dir`, every scalar and the density histogram are written to
    TensorBoard at `step` (`tensorboard.write_metrics`).

    Args:
        model: a `SparseAutoencoder`.
        x: `(N, input_dim)` float activations, or an `ActivationStore`.
        targets: `None`, or a transcoder's targets `y` of the rows of `x`
            (`core_metrics`; a transcoder needs them).
        labels: optional `(N,)` class labels of the rows of `x`.
        splice: optional dict of `spliced_metrics` arguments.
        log_dir: optional TensorBoard log folder.
        step: int, the TensorBoard step.

    Returns:
        One flat dict: floats, and numpy arrays for per-latent and per-task
        values (see each function for its keys).

    Example:

    >>> import numpy as np
    >>> import gated_sae_layers as gsl
    >>> sae = gsl.build_sae("topk", 8, 16, k=2)
    >>> x = np.random.default_rng(0).normal(size=(40, 8)).astype("float32")
    >>> result = evaluate_sae(sae, x, labels=np.arange(40) % 2)
    >>> result["l0"], sorted(k for k in result if k.startswith("probe_balanced"))[:2]
    (2.0, ['probe_balanced_accuracy_k1', 'probe_balanced_accuracy_k2'])
    """
    # Every argument is checked before the first pass over the rows.
    if log_dir is not None:
        check_log_dir(log_dir)
    if splice is not None:
        splice = _check_splice(splice, model)
    x, _ = activation_rows.check_rows(x, model.input_dim)
    probe = None
    if labels is not None:
        ks = tuple(k for k in DEFAULT_KS if k <= model.latent_dim)
        probe = plan_probe(model, x, labels, ks=ks)
    result = core_metrics(model, x, targets=targets)
    if probe is not None:
        result.update(run_probe(model, probe))
    if splice is not None:
        result.update(spliced_metrics(splice["model"], splice["layer"], model,
                                      splice["inputs"], splice["loss_fn"],
                                      **_splice_options(splice)))
    if log_dir is not None:
        write_metrics(result, log_dir, step)
    return result
