"""`gated-sae export` and `gated-sae import`: their options and early checks,
standard library only.

The commands themselves are `gated_sae_layers.cli.interop.run_export` and
`run_import`.
"""

import pathlib

from gated_sae_layers_cli.options import (
    Command, add_command, add_overwrite_option, positive_int)
from gated_sae_layers_cli.outputs import (
    SAELENS_FILES, check_keras_file, check_not_an_input, check_output_file,
    check_output_folder)


def add_interop_commands(subparsers, parents=()):
    """Adds the `export` and `import` commands to an `argparse` subparsers object.

    Args:
        subparsers: from `parser.add_subparsers(...)`.
        parents: parent parsers with the options every command shares
            (`gated-sae`'s `--import`, `--quiet`, `--debug`); without them
            those options are added here.

    Returns:
        `(export_parser, import_parser)`.

    Example:

    >>> import argparse
    >>> top = argparse.ArgumentParser(prog="gated-sae")
    >>> _ = add_interop_commands(top.add_subparsers(dest="command"))
    >>> args = top.parse_args(["export", "sae.keras", "out/", "--dtype", "bfloat16"])
    >>> args.model, args.folder, args.dtype
    ('sae.keras', 'out/', 'bfloat16')
    >>> args = top.parse_args(["import", "out/", "sae.keras"])
    >>> args.folder, args.model
    ('out/', 'sae.keras')
    """
    export = add_command(
        subparsers, "export", parents,
        help="write a saved SAE as a SAELens folder (cfg.json + safetensors)",
        description="Writes a saved SAE as a SAELens 6.x folder that "
                    "`sae_lens.SAE.load_from_disk` reads. Other files in FOLDER are "
                    "left alone.")
    export.add_argument("model", metavar="MODEL.keras", help="the SAE, a .keras file")
    export.add_argument("folder", metavar="FOLDER",
                        help="the SAELens folder to write (created if missing)")
    export.add_argument("--dtype", default="float32",
                        choices=("float32", "bfloat16", "float16", "float64"),
                        help="the stored dtype")
    export.add_argument("--model-name", help="metadata.model_name, the LM (default: none)")
    export.add_argument("--hook-name",
                        help="metadata.hook_name, the hook point (default: none)")
    export.add_argument("--context-size", type=positive_int,
                        help="metadata.context_size (default: none)")
    add_overwrite_option(export, f"the SAE files in FOLDER ({', '.join(SAELENS_FILES)})")
    export.set_defaults(
        run=Command(check_export, "gated_sae_layers.cli.interop:run_export"))
    imported = add_command(
        subparsers, "import", parents,
        help="read a SAELens, sparsify or dictionary_learning folder into a .keras file",
        description="Reads a SAELens 6.x, sparsify or converted dictionary_learning "
                    "folder (safetensors only) and saves it as a .keras SAE.")
    imported.add_argument("folder", metavar="FOLDER", help="the SAE folder to read")
    imported.add_argument("model", metavar="MODEL.keras", help="the .keras file to write")
    add_overwrite_option(imported, "MODEL.keras")
    imported.set_defaults(
        run=Command(check_import, "gated_sae_layers.cli.interop:run_import"))
    return export, imported


# The files `gated_sae_layers.interop.load_sae` may read in a folder.
SAE_INPUT_FILES = SAELENS_FILES + ("sae.safetensors", "ae.safetensors")


def check_export(args):
    """The checks of `export` that need no model; none of the SAE files it
    writes into FOLDER may be the model it reads."""
    check_keras_file(args.model)
    check_not_an_input("FOLDER", args.folder, {"MODEL.keras": args.model},
                       names=SAELENS_FILES)
    check_output_folder(args.folder, "FOLDER", SAELENS_FILES,
                        getattr(args, "overwrite", False))


def check_import(args):
    """The checks of `import` that need no model; MODEL.keras may not be one
    of the folder's files it reads."""
    folder = pathlib.Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"`FOLDER` must be an existing folder. Received: {args.folder}")
    check_not_an_input("MODEL.keras", args.model,
                       {f"FOLDER's {name}": folder / name for name in SAE_INPUT_FILES})
    check_output_file(args.model, "MODEL.keras", getattr(args, "overwrite", False),
                      suffix=".keras")
