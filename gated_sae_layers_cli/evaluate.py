"""`gated-sae evaluate`: its options and early checks, standard library only.

The command itself is `gated_sae_layers.cli.evaluate.run_evaluate`.
"""

from gated_sae_layers_cli.options import (
    Command, add_command, add_overwrite_option, positive_int)
from gated_sae_layers_cli.outputs import (
    check_input_file, check_keras_file, check_not_an_input, check_output_file,
    check_store_folder)


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
    command = add_command(
        subparsers, "evaluate", parents,
        help="SAEBench-lite metrics of a saved SAE on a store's rows",
        description="Prints SAEBench-lite metrics (fidelity, sparsity, feature "
                    "density, geometry, optional k-sparse probing) of a saved SAE on a "
                    "store's rows as one line of JSON. Evaluate on a held-out store "
                    "(`gated-sae harvest --skip`) to measure generalization.")
    command.add_argument("model", metavar="MODEL.keras", help="the SAE, a .keras file")
    command.add_argument("--store", required=True, metavar="STORE_DIR",
                         help="an activation store folder")
    command.add_argument("--labels", metavar="FILE.npy", help=(
        "one class label per store row, in order: adds k-sparse probing "
        "(default: no probing)"))
    command.add_argument("--log-dir", metavar="DIR", help=(
        "also write the metrics to TensorBoard here, at step 0; event files are "
        "added, never replaced (default: none)"))
    command.add_argument("--json", dest="json_out", metavar="OUT.json", help=(
        "also write the full report (per-latent arrays too) here (default: none)"))
    command.add_argument("--batch-size", type=positive_int, default=1024,
                         help="rows through the SAE at a time")
    add_overwrite_option(command, "the --json file")
    command.set_defaults(
        run=Command(check_evaluate, "gated_sae_layers.cli.evaluate:run_evaluate"))
    return command


def check_evaluate(args):
    """The checks of `evaluate` that need no model: its files, and that no
    output (`--json`, `--log-dir`) is an input or inside the store."""
    check_keras_file(args.model)
    check_store_folder(args.store)
    if args.labels is not None:
        check_input_file(args.labels, "--labels")
    inputs = {"MODEL.keras": args.model, "--store": args.store, "--labels": args.labels}
    if args.json_out is not None:
        check_not_an_input("--json", args.json_out, inputs)
        check_output_file(args.json_out, "--json", getattr(args, "overwrite", False))
    if args.log_dir is not None:
        check_not_an_input("--log-dir", args.log_dir, inputs, names=())
        check_log_dir_option(args.log_dir)


def check_log_dir_option(log_dir):
    """`--log-dir` is a folder, or a path where one can be created: not a
    file nor under one (TensorFlow would fail only when it first writes,
    after the whole pass). The rule of `evaluation.tensorboard.check_log_dir`."""
    import pathlib

    if not str(log_dir).strip():
        raise ValueError("`--log-dir` must be a folder, not an empty path. "
                         f"Received: --log-dir={log_dir!r}")
    folder = existing = pathlib.Path(log_dir)
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == folder else f", under {existing}"
        raise NotADirectoryError(
            "`--log-dir` must be a folder (TensorBoard writes event files into it). "
            f"Received: --log-dir={str(folder)!r}{where}, a file")
