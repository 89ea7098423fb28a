"""`gated-sae export` and `gated-sae import`: SAELens folders from and to `.keras` files.

    gated-sae export sae.keras sae_folder/ [--dtype bfloat16] [--model-name gpt2]
        [--hook-name blocks.6.hook_resid_post] [--context-size 128]
    gated-sae import sae_folder/ sae.keras

Hooked into `gated_sae_layers.cli` by `add_interop_commands(commands,
parents=[common])`; `run_export(args)` and `run_import(args)` are the
commands (`save_sae` and `load_sae` of `gated_sae_layers.interop`). `import`
reads SAELens, sparsify and converted dictionary_learning folders. Each
prints one line of JSON. User errors raise `OSError`/`ValueError`/
`TypeError`, which the `gated-sae` main turns into one line and exit status 2.
"""

import json
import pathlib

from gated_sae_layers.cli._options import check_keras_file, common_options, import_modules


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
    export = subparsers.add_parser(
        "export", parents=list(parents) or [common_options()],
        help="write a saved SAE as a SAELens folder (cfg.json + safetensors)")
    export.add_argument("model", metavar="MODEL.keras", help="the SAE, a .keras file")
    export.add_argument("folder", metavar="FOLDER", help="the SAELens folder to write")
    export.add_argument("--dtype", default="float32",
                        choices=("float32", "bfloat16", "float16", "float64"),
                        help="the stored dtype")
    export.add_argument("--model-name", help="metadata.model_name (the LM)")
    export.add_argument("--hook-name", help="metadata.hook_name (the hook point)")
    export.add_argument("--context-size", type=int, help="metadata.context_size")
    export.set_defaults(run=run_export)
    imported = subparsers.add_parser(
        "import", parents=list(parents) or [common_options()],
        help="read a SAELens, sparsify or dictionary_learning folder into a .keras file")
    imported.add_argument("folder", metavar="FOLDER", help="the SAE folder to read")
    imported.add_argument("model", metavar="MODEL.keras", help="the .keras file to write")
    imported.set_defaults(run=run_import)
    return export, imported


def run_export(args):
    """Runs `gated-sae export` for parsed `args`; returns the printed dict."""

    check_keras_file(args.model)
    if pathlib.Path(args.folder).exists() and not pathlib.Path(args.folder).is_dir():
        raise FileExistsError(f"`FOLDER` must be a folder, not a file. Received: "
                              f"{args.folder}")
    import_modules(getattr(args, "imports", None) or ())

    import keras

    # Importing this module imported `gated_sae_layers`, which registers the
    # kit's classes for `load_model`.
    from gated_sae_layers.interop import save_sae

    model = keras.saving.load_model(args.model, safe_mode=True)
    metadata = {key: value for key, value in (
        ("model_name", args.model_name), ("hook_name", args.hook_name),
        ("context_size", args.context_size)) if value is not None}
    folder = save_sae(model, args.folder, metadata=metadata, dtype=args.dtype)
    cfg = json.loads((folder / "cfg.json").read_text())
    printed = {"folder": str(folder), "architecture": cfg["architecture"],
               "d_in": cfg["d_in"], "d_sae": cfg["d_sae"], "dtype": cfg["dtype"]}
    print(json.dumps(printed))
    return printed


def run_import(args):
    """Runs `gated-sae import` for parsed `args`; returns the printed dict."""

    if not pathlib.Path(args.folder).is_dir():
        raise FileNotFoundError(f"`FOLDER` must be an existing folder. Received: "
                                f"{args.folder}")
    out = pathlib.Path(args.model)
    if out.suffix != ".keras":
        raise ValueError(f"`MODEL.keras` must be a file name ending in .keras. "
                         f"Received: {args.model}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"`MODEL.keras`: the folder {out.parent} does not "
                                "exist. Create it first.")
    import_modules(getattr(args, "imports", None) or ())

    from gated_sae_layers.interop import load_sae

    model = load_sae(args.folder)
    model.save(out)
    printed = {"model": str(out), "encoder": type(model.encoder).__name__,
               "input_dim": model.input_dim, "latent_dim": model.latent_dim}
    print(json.dumps(printed))
    return printed
