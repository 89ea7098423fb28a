"""`gated-sae dashboard`: a feature dashboard (static HTML) of a saved SAE.

    gated-sae dashboard sae.keras --store store/ --out report/ [--num-latents 100]
    gated-sae dashboard sae.keras --activations x.npy --out report/ --image-shape 28 28

Its options and early checks are in `gated_sae_layers_cli.dashboard`
(`add_dashboard_command`, here too for `argparse` users); `run_dashboard(args)`
is the command. A store harvested by `gated-sae harvest --model minilm` gets
text pages: its texts are tokenized again (the store's metadata names them)
and matched to its rows. `--image-shape` shows each row (or each image of
`--images`) as an image; its size is checked against the rows before the
pass. The report is written into a temporary folder inside `--out` and its
two files renamed into place when complete. It prints one line of JSON:
the report's `summary.json` and its path.
"""

import contextlib
import json
import math
import pathlib
import shutil
import tempfile

import keras
import numpy as np

import gated_sae_layers as gsl  # registers the kit's classes
from gated_sae_layers.activations.store import ActivationStore
from gated_sae_layers.cli.harvest import harvest_texts
from gated_sae_layers.dashboard import ImageContext, TokenContext, feature_dashboard
from gated_sae_layers_cli.options import import_modules
from gated_sae_layers_cli.outputs import (
    DASHBOARD_FILES, replace_files, written_by_a_dashboard)
from gated_sae_layers_cli.dashboard import add_dashboard_command, check_dashboard


def _metadata_int(metadata, key, store, minimum=1, default=None):
    value = metadata.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"The store at {store.path} has a malformed `{key}` in its metadata: expected "
            f"an integer >= {minimum}. Received: {value!r}")
    return value


def text_context(store, window=8, texts_file=None):
    """A `TokenContext` for a store harvested from MiniLM by `gated-sae
    harvest`, or `None` for any other store.

    The texts are tokenized again: the standard-library docstrings, or
    `texts_file` for a store harvested from a text file (the path in the
    store's metadata is never opened: a path read from a file could point
    anywhere), from the store's `skip` on. Of the two rules `harvest` may
    have used (padding dropped, `[CLS]`/`[SEP]` kept or dropped) the one
    that gives the store's row count is taken.
    """
    metadata = store.metadata
    if metadata.get("model") != "minilm":
        return None
    num_texts = _metadata_int(metadata, "num_texts", store)
    sequence_length = _metadata_int(metadata, "sequence_length", store)
    skip = _metadata_int(metadata, "skip", store, minimum=0, default=0)
    import keras_hub

    from gated_sae_layers.activations.minilm import minilm_path

    if metadata.get("texts") != "stdlib" and texts_file is None:
        raise ValueError(
            f"The store at {store.path} was harvested from a text file "
            f"({metadata.get('texts')!r} in its metadata): pass that file with "
            "`--texts FILE` to show text context.")
    texts = harvest_texts(metadata.get("texts"), skip, num_texts, texts_file)
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


def _check_image_shape(image_shape, width, images):
    """Before the pass: the images of `--image-shape` are the rows (of
    `width`), or those of `--images`."""
    pixels = math.prod(image_shape)
    shape = " ".join(map(str, image_shape))
    if images is None and pixels != width:
        raise ValueError(
            f"`--image-shape {shape}` must have as many pixels as a row has values "
            f"({width}), as the rows are shown as images (or pass --images). "
            f"Received: {pixels} pixels")
    if images is not None and math.prod(images.shape[1:]) != pixels:
        raise ValueError(
            f"`--image-shape {shape}` must have as many pixels as an image of --images "
            f"(of shape {images.shape[1:]}). Received: {pixels} pixels")


def run_dashboard(args):
    """Runs `gated-sae dashboard` for parsed `args`; returns the printed dict."""
    check_dashboard(args)
    import_modules(getattr(args, "imports", None) or ())
    if args.store is not None:
        data = ActivationStore.open(args.store)
        width = data.input_dim
    else:
        data = np.load(args.activations, mmap_mode="r", allow_pickle=False)
        width = data.shape[-1] if getattr(data, "ndim", 0) == 2 else None
    context = None
    if args.image_shape is not None:
        images = None if args.images is None else np.load(args.images, allow_pickle=False)
        if width is not None:
            _check_image_shape(args.image_shape, width, images)
        context = ImageContext(tuple(args.image_shape), images)
    elif args.store is not None:
        context = text_context(data, args.window, getattr(args, "texts", None))
    model = keras.saving.load_model(args.model, safe_mode=True)
    if getattr(model, "normalization_scale", None) is not None:
        model = gsl.fold_normalization(model)  # trained on scaled rows: read raw ones
    out = pathlib.Path(args.out)
    created = not out.exists()
    out.mkdir(exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".dashboard.", suffix=".partial", dir=out)
    try:
        feature_dashboard(model, data, temporary, context, num_latents=args.num_latents,
                          batch_size=args.batch_size, progress=not args.quiet)
        printed = json.loads((pathlib.Path(temporary) / "summary.json").read_text())
        replace_files(temporary, out, DASHBOARD_FILES, getattr(args, "overwrite", False),
                      written_by_a_dashboard, not_ours="no feature dashboard wrote it")
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if still empty
        raise
    printed["index"] = str(out / "index.html")
    print(json.dumps(printed))
    return printed


__all__ = ["add_dashboard_command", "run_dashboard", "text_context"]
