"""`gated-sae evaluate`: SAEBench-lite metrics of a saved SAE on a store's rows.

    gated-sae evaluate sae.keras --store held_out_store/ [--labels labels.npy]
        [--log-dir logs/] [--json report.json]

Its options and early checks are in `gated_sae_layers_cli.evaluate`
(`add_evaluate_command`, here too for `argparse` users); `run_evaluate(args)`
is the command. It prints one line of JSON: every scalar, and the log10
feature-density histogram (counts and bin edges). `--json` writes the same
plus the per-latent and per-task arrays. A model saved with a
`normalization_scale` (trained on scaled activations) is folded first
(`fold_normalization`), so that it reads the store's raw rows.
"""

import json

import keras
import numpy as np

import gated_sae_layers as gsl  # registers the kit's classes
from gated_sae_layers.activations.store import ActivationStore
from gated_sae_layers.evaluation.core import core_metrics
from gated_sae_layers.evaluation.probing import k_sparse_probe
from gated_sae_layers.evaluation.report import DEFAULT_KS
from gated_sae_layers.evaluation.tensorboard import write_metrics
from gated_sae_layers_cli.options import import_modules
from gated_sae_layers_cli.outputs import write_text
from gated_sae_layers_cli.evaluate import add_evaluate_command, check_evaluate

PRINTED_ARRAYS = ("density_histogram", "density_bin_edges")


def _jsonable(value):
    """Plain JSON values; NaN and infinities become null (strict JSON)."""
    if isinstance(value, np.ndarray):
        return [_jsonable(item) for item in value.tolist()]
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def run_evaluate(args):
    """Runs `gated-sae evaluate` for parsed `args`; returns the printed dict."""
    check_evaluate(args)
    import_modules(getattr(args, "imports", None) or ())
    store = ActivationStore.open(args.store)
    labels = None
    if args.labels is not None:
        labels = np.load(args.labels, allow_pickle=False)
        if labels.ndim != 1 or len(labels) != store.num_rows:
            raise ValueError(
                f"`--labels` must hold one label per store row ({store.num_rows}). "
                f"Received: an array of shape {labels.shape}")
    model = keras.saving.load_model(args.model, safe_mode=True)
    scale = getattr(model, "normalization_scale", None)
    if scale is not None:  # trained on scale * x: make it take the raw rows
        model = gsl.fold_normalization(model)
    report = core_metrics(model, store, batch_size=args.batch_size)
    if labels is not None:
        ks = tuple(k for k in DEFAULT_KS if k <= model.latent_dim)
        report.update(k_sparse_probe(model, store, labels, ks=ks,
                                     batch_size=args.batch_size))
    report.update(model=str(args.model), store=str(args.store),
                  normalization_scale=scale)
    if args.log_dir is not None:
        write_metrics(report, args.log_dir, step=0)
    full = {key: _jsonable(value) for key, value in report.items()}
    printed = {key: value for key, value in full.items()
               if not isinstance(report[key], np.ndarray) or key in PRINTED_ARRAYS}
    if args.json_out is not None:
        write_text(args.json_out, json.dumps(full, indent=1),
                   getattr(args, "overwrite", False))
    print(json.dumps(printed))
    return printed


__all__ = ["add_evaluate_command", "run_evaluate"]
