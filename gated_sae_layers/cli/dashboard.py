"""`gated-sae dashboard`: a feature dashboard (static HTML) of a saved SAE.

    gated-sae dashboard sae.keras --store store/ --out report/ [--num-latents 100]
    gated-sae dashboard sae.keras --activations x.npy --out report/ --image-shape 28 28

Hooked into `gated_sae_layers.cli` by `add_dashboard_command(commands,
parents=[common])`; `run_dashboard(args)` is the command. A store harvested
by `gated-sae harvest --model minilm` gets text pages: its texts are
tokenized again (the store's metadata names them) and matched to its rows.
`--image-shape` shows each row (or each image of `--images`) as an image.
It prints one line of JSON: the report's `summary.json` and its path.
"""

import json
import pathlib

import numpy as np

from gated_sae_layers.cli._options import (
    check_input_file, check_keras_file, check_store_folder, common_options, import_modules)


def add_dashboard_command(subparsers, parents=()):
    """Adds the `dashboard` command to an `argparse` subparsers object.

    Example:

    >>> import argparse
    >>> top = argparse.ArgumentParser(prog="gated-sae")
    >>> _ = add_dashboard_command(top.add_subparsers(dest="command"))
    >>> args = top.parse_args(["dashboard", "sae.keras", "--store", "s/", "--out", "r/"])
    >>> args.model, args.store, args.num_latents, args.image_shape
    ('sae.keras', 's/', 100, None)
    """
    command = subparsers.add_parser(
        "dashboard", parents=list(parents) or [common_options()],
        help="a static HTML report to browse the SAE's latents offline")
    command.add_argument("model", metavar="MODEL.keras", help="the SAE, a .keras file")
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", metavar="STORE_DIR", help="an activation store folder")
    source.add_argument("--activations", metavar="FILE.npy",
                        help="a (rows, input_dim) float array instead of a store")
    command.add_argument("--out", required=True, metavar="DIR", help=(
        "the report folder (its parent must exist); only index.html and "
        "summary.json are written there"))
    command.add_argument("--num-latents", type=int, default=100,
                         help="latents given a page (the most interesting ones)")
    command.add_argument("--image-shape", type=int, nargs="+", metavar="N",
                         help="show examples as images of this shape, e.g. 28 28")
    command.add_argument("--images", metavar="FILE.npy",
                         help="with --image-shape: one image per row (default: the rows)")
    command.add_argument("--texts", metavar="FILE",
                         help="for a store harvested from a text file: that file (a path "
                              "in the store's metadata is never opened)")
    command.add_argument("--window", type=int, default=8,
                         help="for text: tokens shown on each side of an example")
    command.add_argument("--batch-size", type=int, default=1024,
                         help="rows through the SAE at a time")
    command.set_defaults(run=run_dashboard)
    return command


def _check_args(args):
    check_keras_file(args.model)
    if args.store is not None:
        check_store_folder(args.store)
    for option, path in (("--activations", args.activations), ("--images", args.images),
                         ("--texts", getattr(args, "texts", None))):
        if path is not None:
            check_input_file(path, option)
    if args.images is not None and args.image_shape is None:
        raise ValueError("`--images` needs `--image-shape`, e.g. --image-shape 28 28.")
    for option, value in (("--num-latents", args.num_latents), ("--window", args.window),
                          ("--batch-size", args.batch_size)):
        if value <= 0:
            raise ValueError(f"`{option}` must be a positive integer. Received: {value}")
    if not pathlib.Path(args.out).parent.is_dir():
        raise FileNotFoundError(
            f"`--out`: the folder {pathlib.Path(args.out).parent} does not exist. "
            "Create it first.")
    from gated_sae_layers.dashboard.output import check_output_dir

    check_output_dir(args.out)


def _metadata_int(metadata, key, store):
    value = metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"The store at {store.path} has a malformed `{key}` in its metadata: expected "
            f"a positive integer. Received: {value!r}")
    return value


def text_context(store, window=8, texts_file=None):
    """A `TokenContext` for a store harvested from MiniLM by `gated-sae
    harvest`, or `None` for any other store.

    The texts are tokenized again: the standard-library docstrings, or
    `texts_file` for a store harvested from a text file (the path in the
    store's metadata is never opened: a path read from a file could point
    anywhere). Of the two rules `harvest` may have used (padding dropped,
    `[CLS]`/`[SEP]` kept or dropped) the one that gives the store's row
    count is taken.
    """
    metadata = store.metadata
    if metadata.get("model") != "minilm":
        return None
    num_texts = _metadata_int(metadata, "num_texts", store)
    sequence_length = _metadata_int(metadata, "sequence_length", store)
    import keras_hub

    from gated_sae_layers.activations.minilm import minilm_path, stdlib_docstrings
    from gated_sae_layers.dashboard import TokenContext

    if metadata.get("texts") == "stdlib":
        texts = stdlib_docstrings(max_texts=num_texts)
    elif texts_file is None:
        raise ValueError(
            f"The store at {store.path} was harvested from a text file "
            f"({metadata.get('texts')!r} in its metadata): pass that file with "
            "`--texts FILE` to show text context.")
    else:
        lines = pathlib.Path(texts_file).read_text().splitlines()
        texts = [line.strip() for line in lines if line.strip()][:num_texts]
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        str(minilm_path()), sequence_length=sequence_length)
    inputs = {k: np.asarray(v) for k, v in preprocessor(texts).items()}
    tokenizer = preprocessor.tokenizer
    special = (int(tokenizer.cls_token_id), int(tokenizer.sep_token_id))
    for drop in ((), special):
        context = TokenContext.from_inputs(inputs, tokenizer, drop, window=window)
        if context.num_rows == store.num_rows:
            return context
    raise ValueError(
        f"The store at {store.path} has {store.num_rows} rows, but its texts make "
        f"{context.num_rows} (without [CLS]/[SEP]) or more: the texts changed since "
        "the harvest, or it was interrupted. Harvest it again.")


def run_dashboard(args):
    """Runs `gated-sae dashboard` for parsed `args`; returns the printed dict."""
    _check_args(args)
    import_modules(getattr(args, "imports", None) or ())

    import keras

    import gated_sae_layers as gsl  # registers the kit's classes
    from gated_sae_layers.activations.store import ActivationStore
    from gated_sae_layers.dashboard import ImageContext, feature_dashboard

    if args.store is not None:
        data = ActivationStore.open(args.store)
        context = text_context(data, args.window, getattr(args, "texts", None))
    else:
        data = np.load(args.activations, mmap_mode="r", allow_pickle=False)
        context = None
    if args.image_shape is not None:
        images = None if args.images is None else np.load(args.images, allow_pickle=False)
        context = ImageContext(tuple(args.image_shape), images)
    model = keras.saving.load_model(args.model, safe_mode=True)
    if getattr(model, "normalization_scale", None) is not None:
        model = gsl.fold_normalization(model)  # trained on scaled rows: read raw ones
    index = feature_dashboard(model, data, args.out, context, num_latents=args.num_latents,
                              batch_size=args.batch_size, progress=not args.quiet)
    printed = json.loads((index.parent / "summary.json").read_text())
    printed["index"] = str(index)
    print(json.dumps(printed))
    return printed
