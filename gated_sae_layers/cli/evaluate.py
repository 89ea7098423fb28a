"""`gated-sae evaluate`: SAEBench-lite metrics of a saved SAE on a store's rows.

    gated-sae evaluate sae.keras --store store/ [--labels labels.npy]
        [--log-dir logs/] [--json report.json]

Hooked into `gated_sae_layers.cli` by `add_evaluate_command(commands,
parents=[common])`; `run_evaluate(args)` is the command. It prints one line
of JSON: every scalar, and the log10 feature-density histogram (counts and
bin edges). `--json` writes the same plus the per-latent and per-task
arrays. A model saved with a `normalization_scale` (trained on scaled
activations) is folded first (`fold_normalization`), so that it reads the
store's raw rows. User errors raise `OSError`/`ValueError`/`TypeError`, which the
`gated-sae` main turns into one line and exit status 2.
"""

import json
import pathlib

import numpy as np

from gated_sae_layers.cli._options import (
    check_input_file, check_keras_file, check_store_folder, common_options, import_modules)

PRINTED_ARRAYS = ("density_histogram", "density_bin_edges")


def add_evaluate_command(subparsers, parents=()):
    """Adds the `evaluate` command to an `argparse` subparsers object.

    Args:
        subparsers: from `parser.add_subparsers(...)`.
        parents: parent parsers with the options every command shares
            (`gated-sae`'s `--import`, `--quiet`, `--debug`); without them
            those options are added here.

    Returns:
        The `evaluate` subparser.

    Example:

    >>> import argparse
    >>> top = argparse.ArgumentParser(prog="gated-sae")
    >>> _ = add_evaluate_command(top.add_subparsers(dest="command"))
    >>> args = top.parse_args(["evaluate", "sae.keras", "--store", "store/"])
    >>> args.model, args.store, args.labels
    ('sae.keras', 'store/', None)
    """
    command = subparsers.add_parser(
        "evaluate", parents=list(parents) or [common_options()],
        help="SAEBench-lite metrics of a saved SAE on a store's rows")
    command.add_argument("model", metavar="MODEL.keras", help="the SAE, a .keras file")
    command.add_argument("--store", required=True, metavar="STORE_DIR",
                         help="an activation store folder")
    command.add_argument("--labels", metavar="FILE.npy", help=(
        "one class label per store row, in order: adds k-sparse probing"))
    command.add_argument("--log-dir", metavar="DIR",
                         help="write the metrics to TensorBoard here (step 0)")
    command.add_argument("--json", dest="json_out", metavar="OUT.json",
                         help="also write the full report (per-latent arrays too) here")
    command.add_argument("--batch-size", type=int, default=1024,
                         help="rows through the SAE at a time")
    command.set_defaults(run=run_evaluate)
    return command


def _check_args(args):
    check_keras_file(args.model)
    check_store_folder(args.store)
    if args.labels is not None:
        check_input_file(args.labels, "--labels")
    if args.json_out is not None and not pathlib.Path(args.json_out).parent.is_dir():
        raise FileNotFoundError(
            f"`--json`: the folder of {args.json_out} does not exist. Create it first.")
    if args.batch_size <= 0:
        raise ValueError(
            f"`--batch-size` must be a positive integer. Received: {args.batch_size}")


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
    _check_args(args)
    import_modules(getattr(args, "imports", None) or ())

    import keras

    import gated_sae_layers as gsl  # registers the kit's classes
    from gated_sae_layers.activations.store import ActivationStore
    from gated_sae_layers.evaluation.core import core_metrics
    from gated_sae_layers.evaluation.probing import k_sparse_probe
    from gated_sae_layers.evaluation.report import DEFAULT_KS
    from gated_sae_layers.evaluation.tensorboard import write_metrics

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
        pathlib.Path(args.json_out).write_text(json.dumps(full, indent=1))
    print(json.dumps(printed))
    return printed
