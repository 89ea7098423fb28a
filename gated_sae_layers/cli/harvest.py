"""`gated-sae harvest`: a layer's activations into a store, or several
layers' side by side.

Its options and early checks are in `gated_sae_layers_cli.harvest`.
`--skip N` skips the first N texts or input rows, so that a held-out store
comes from the same source as the training store without sharing an
example; the store's metadata records it (`skip`), and `harvest_texts`
gives back a store's texts from its metadata.

With several layers (`--layer` repeated, `--target-layer`), each row holds
their outputs side by side, the `--layer` blocks first, and the metadata
records the blocks (`blocks`, by `harvest`) and, where there are targets,
their roles: `roles = {"inputs": [names], "targets": [names]}`, so that
`paired_dataset(store, roles["inputs"], roles["targets"], batch_size)` pairs
them.
"""

import contextlib
import json
import pathlib

import keras
import numpy as np

from gated_sae_layers.activations import ActivationStore
from gated_sae_layers.activations.harvest import harvest
from gated_sae_layers_cli.options import import_modules
from gated_sae_layers_cli.outputs import MANIFEST, replacing_store
from gated_sae_layers_cli.harvest import DEFAULT_MAX_TEXTS, check_harvest


def run_harvest(args):
    """Runs `gated-sae harvest` for parsed `args`; returns the printed dict."""
    check_harvest(args)
    import_modules(args.imports)
    model, inputs, drop, metadata = _load(args)
    places = args.layer + args.target_layer
    layer = places[0] if len(places) == 1 else places
    replace = args.overwrite and (pathlib.Path(args.out) / MANIFEST).exists()
    replacing = replacing_store(args.out) if replace else contextlib.nullcontext(args.out)
    with replacing as folder:
        store = ActivationStore.create(folder, _width(model, layer, inputs),
                                       args.dtype, args.shard_rows, metadata,
                                       resume=args.resume)
        harvest(model, layer, inputs, batch_size=args.batch_size, store=store,
                drop_token_ids=drop, progress=not args.quiet)
    printed = {"store": str(args.out), "rows": store.num_rows, "shards": store.num_shards,
               "input_dim": store.input_dim, "examples": len(keras.tree.flatten(inputs)[0]),
               "skip": args.skip}
    if len(places) > 1:
        printed["blocks"] = [list(block) for block in store.blocks]
    print(json.dumps(printed))
    return printed


def harvest_texts(texts, skip, count, texts_file=None):
    """The texts a harvest of `--texts texts --skip skip` fed the model, at
    most `count` of them: the standard-library docstrings (`texts ==
    "stdlib"`), or the non-empty lines of `texts_file` (default: `texts`)."""
    from gated_sae_layers.activations.minilm import stdlib_docstrings

    if texts == "stdlib":
        available = stdlib_docstrings(max_texts=skip + count)
        source = "the standard-library docstrings"
    else:
        lines = pathlib.Path(texts_file or texts).read_text().splitlines()
        available = [line.strip() for line in lines if line.strip()]
        source = str(texts_file or texts)
    if skip >= len(available):
        raise ValueError(
            f"`--skip` must leave some texts: {source} hold {len(available)}. "
            f"Received: --skip={skip}")
    return available[skip:skip + count]


def _load(args):
    """`(model, inputs, token ids to drop, store metadata)` for `harvest`."""
    metadata = {"model": args.model,
                "layer": args.layer[0] if len(args.layer) == 1 else args.layer,
                "skip": args.skip}
    if args.target_layer:
        metadata["roles"] = {"inputs": args.layer, "targets": args.target_layer}
    if args.model != "minilm":
        inputs = _npy_inputs(args)
        model = keras.saving.load_model(args.model)
        _check_model_inputs(model, inputs, args)
        return model, inputs, (), metadata
    from gated_sae_layers.activations.minilm import load_minilm

    texts = harvest_texts(args.texts, args.skip, args.max_texts or DEFAULT_MAX_TEXTS)
    model, preprocessor = load_minilm(args.sequence_length)
    inputs = {k: np.asarray(v) for k, v in preprocessor(texts).items()}
    tokenizer = preprocessor.tokenizer
    drop = (int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)) \
        if args.drop_special_tokens else ()
    metadata.update(texts=args.texts, num_texts=len(texts),
                    sequence_length=args.sequence_length)
    return model, inputs, drop, metadata


def _npy_inputs(args):
    """Rows `[skip, skip + max_texts)` of the `--inputs` array (only they are read)."""
    inputs = np.load(args.inputs, mmap_mode="r", allow_pickle=False)
    if not isinstance(inputs, np.ndarray) or inputs.ndim < 1:
        raise ValueError(
            "`--inputs` must be a .npy file of one array, one example per row. "
            f"Received: {args.inputs}")
    if args.skip >= len(inputs):
        raise ValueError(
            f"`--skip` must leave some rows of --inputs: {args.inputs} holds "
            f"{len(inputs)}. Received: --skip={args.skip}")
    end = None if args.max_texts is None else args.skip + args.max_texts
    return np.array(inputs[args.skip:end])


def _check_model_inputs(model, inputs, args):
    """The model's one input takes examples of the shape of `inputs`' rows."""
    try:
        specs = model.inputs
    except (AttributeError, ValueError):  # a subclassed model: its call decides
        return
    if not specs:
        return
    if len(specs) != 1:
        raise ValueError(
            f"`--model` {args.model} takes {len(specs)} inputs, but `--inputs` is one "
            "array. Harvest it from Python (`gated_sae_layers.activations.harvest`) "
            "with a dict of arrays.")
    shape = tuple(specs[0].shape)
    received = inputs.shape[1:]
    if len(shape) != len(received) + 1 or any(
            size is not None and size != got for size, got in zip(shape[1:], received)):
        expected = tuple("any" if size is None else size for size in shape[1:])
        raise ValueError(
            f"`--inputs` must hold examples of shape {expected} for the model "
            f"{args.model} (its input shape is {shape}). Received: {args.inputs} of "
            f"shape {tuple(np.load(args.inputs, mmap_mode='r').shape)}, examples of "
            f"shape {received}")


def _width(model, layer, inputs):
    first = keras.tree.map_structure(lambda a: a[:1], inputs)
    return harvest(model, layer, first, progress=False).shape[-1]
