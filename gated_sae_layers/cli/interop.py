"""`gated-sae export` and `gated-sae import`: SAELens folders from and to `.keras` files.

    gated-sae export sae.keras sae_folder/ [--dtype bfloat16] [--model-name gpt2]
        [--hook-name blocks.6.hook_resid_post] [--context-size 128] [--overwrite]
    gated-sae import sae_folder/ sae.keras [--overwrite]

Their options and early checks are in `gated_sae_layers_cli.interop`
(`add_interop_commands`, here too for `argparse` users); `run_export(args)`
and `run_import(args)` are the commands (`save_sae` and `load_sae` of
`gated_sae_layers.interop`). `import` reads SAELens, sparsify and converted
dictionary_learning folders. Each prints one line of JSON.
"""

import json

import keras

# Importing `gated_sae_layers` registers the kit's classes for `load_model`.
from gated_sae_layers.interop import load_sae, save_sae
from gated_sae_layers_cli.options import import_modules
from gated_sae_layers_cli.outputs import replacing_file
from gated_sae_layers_cli.interop import add_interop_commands, check_export, check_import


def run_export(args):
    """Runs `gated-sae export` for parsed `args`; returns the printed dict."""
    check_export(args)
    import_modules(getattr(args, "imports", None) or ())
    model = keras.saving.load_model(args.model, safe_mode=True)
    metadata = {key: value for key, value in (
        ("model_name", args.model_name), ("hook_name", args.hook_name),
        ("context_size", args.context_size)) if value is not None}
    folder = save_sae(model, args.folder, metadata=metadata, dtype=args.dtype,
                      overwrite=getattr(args, "overwrite", False))
    cfg = json.loads((folder / "cfg.json").read_text())
    printed = {"folder": str(folder), "architecture": cfg["architecture"],
               "d_in": cfg["d_in"], "d_sae": cfg["d_sae"], "dtype": cfg["dtype"]}
    print(json.dumps(printed))
    return printed


def run_import(args):
    """Runs `gated-sae import` for parsed `args`; returns the printed dict."""
    check_import(args)
    import_modules(getattr(args, "imports", None) or ())
    model = load_sae(args.folder)
    with replacing_file(args.model, getattr(args, "overwrite", False)) as temporary:
        model.save(temporary)
    printed = {"model": str(args.model), "encoder": type(model.encoder).__name__,
               "input_dim": model.input_dim, "latent_dim": model.latent_dim}
    print(json.dumps(printed))
    return printed


__all__ = ["add_interop_commands", "run_export", "run_import"]
