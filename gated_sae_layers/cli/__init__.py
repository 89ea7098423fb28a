"""`gated-sae`: harvest activations to a store, train an SAE from a store, evaluate it.

    gated-sae harvest --model minilm --layer transformer_layer_2 --texts stdlib --out store/
    gated-sae harvest --model classifier.keras --layer hidden --inputs x.npy --out store/
    gated-sae train --store store/ --latent-dim 4096 --sparsity-coefficient 1.0 --out sae.keras
    gated-sae evaluate sae.keras --store store/ [--labels labels.npy] [--log-dir logs/]
    gated-sae export sae.keras saelens_folder/      (and: gated-sae import folder/ sae.keras)
    gated-sae dashboard sae.keras --store store/ --out report/ [--num-latents 100]

The same options as the Python API (`harvest`, `ActivationStore`,
`store_dataset`, `build_sae`/`build_gated_sae`, `estimate_norm_scale`,
`fold_normalization`). Every path is checked before any work starts. A user
error (a missing file, a bad value, a corrupt or locked store) prints one
line, `gated-sae: error: ...`, and exits with status 2 (130 on Ctrl-C);
`--debug` shows the traceback instead. `--import MODULE` (repeatable) imports
a module first, so that the custom layers it registers with
`keras.saving.register_keras_serializable` load.
"""

import argparse
import json
import math
import os
import pathlib
import sys

import numpy as np

from gated_sae_layers.activations.store import MANIFEST, StoreLockedError
from gated_sae_layers.cli._options import check_input_file, common_options, import_modules
from gated_sae_layers.cli.dashboard import add_dashboard_command
from gated_sae_layers.cli.evaluate import add_evaluate_command
from gated_sae_layers.cli.interop import add_interop_commands

USER_ERRORS = (OSError, ValueError, TypeError, StoreLockedError)


# ------------------------------------------------------------ argument types
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _number(text, minimum, strict):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise argparse.ArgumentTypeError(
            f"expected a finite number {'>' if strict else '>='} {minimum:g}, got {text!r}")
    return value


def _positive_float(text):
    return _number(text, 0.0, strict=True)


def _non_negative_float(text):
    return _number(text, 0.0, strict=False)


# ------------------------------------------------------------ early checks
def _check_folder(folder, option):
    """`folder` exists and this process may create files in it."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"`{option}`: the folder {folder} does not exist. Create it first.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"`{option}`: cannot write into the folder {folder}.")


def _check_model_out(out):
    out = pathlib.Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"`--out` must be a file name ending in .keras. Received: --out={out}")
    if out.is_dir():
        raise IsADirectoryError(f"`--out` must be a file, not a folder. Received: --out={out}")
    _check_folder(out.parent, "--out")


def _check_store_out(out, resume):
    out = pathlib.Path(out)
    if not out.exists():
        _check_folder(out.parent, "--out")
        return
    if not out.is_dir():
        raise NotADirectoryError(
            f"`--out` must be a folder for the store. Received: --out={out}, a file")
    if (out / MANIFEST).exists() and not resume:
        raise FileExistsError(
            f"A store already exists at {out}. Pass --resume to continue it, or choose "
            "another folder.")
    _check_folder(out, "--out")


# ------------------------------------------------------------ commands
def _harvest(args):
    if args.model != "minilm":
        if not args.inputs:
            raise ValueError("`--inputs FILE.npy` is needed with a .keras model.")
        check_input_file(args.model, "--model")
        check_input_file(args.inputs, "--inputs")
    elif args.texts != "stdlib":
        check_input_file(args.texts, "--texts")
    _check_store_out(args.out, args.resume)
    import_modules(args.imports)

    from gated_sae_layers.activations import ActivationStore
    from gated_sae_layers.activations.harvest import harvest

    model, inputs, drop, metadata = _load(args)
    store = ActivationStore.create(args.out, _width(model, args.layer, inputs), args.dtype,
                                   args.shard_rows, metadata, resume=args.resume)
    harvest(model, args.layer, inputs, batch_size=args.batch_size, store=store,
            drop_token_ids=drop, progress=not args.quiet)
    print(json.dumps({"store": str(args.out), "rows": store.num_rows,
                      "shards": store.num_shards, "input_dim": store.input_dim}))


def _load(args):
    """`(model, inputs, token ids to drop, store metadata)` for `harvest`."""
    metadata = {"model": args.model, "layer": args.layer}
    if args.model != "minilm":
        import keras

        inputs = np.load(args.inputs, allow_pickle=False)
        return keras.saving.load_model(args.model), inputs, (), metadata
    from gated_sae_layers.activations.minilm import load_minilm, stdlib_docstrings

    model, preprocessor = load_minilm(args.sequence_length)
    if args.texts == "stdlib":
        texts = stdlib_docstrings(max_texts=args.max_texts)
    else:
        texts = [line.strip() for line in pathlib.Path(args.texts).read_text().splitlines()
                 if line.strip()][:args.max_texts]
    inputs = {k: np.asarray(v) for k, v in preprocessor(texts).items()}
    tokenizer = preprocessor.tokenizer
    drop = (int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)) \
        if args.drop_special_tokens else ()
    metadata.update(texts=args.texts, num_texts=len(texts),
                    sequence_length=args.sequence_length)
    return model, inputs, drop, metadata


def _width(model, layer, inputs):
    from gated_sae_layers.activations.harvest import harvest

    import keras

    first = keras.tree.map_structure(lambda a: a[:1], inputs)
    return harvest(model, layer, first, progress=False).shape[-1]


def _train(args):
    _check_model_out(args.out)
    import_modules(args.imports)

    import keras

    import gated_sae_layers as gsl
    from gated_sae_layers.activations import ActivationStore, store_dataset
    from gated_sae_layers.activations.normalization import (
        estimate_center, estimate_norm_scale, fold_normalization)

    store = ActivationStore.open(args.store)
    if not store.num_rows:
        raise ValueError(
            f"The store at {args.store} has no rows: nothing to train on. Harvest into "
            "it first.")
    scale = estimate_norm_scale(store) if args.normalize else 1.0
    model = gsl.build_gated_sae(store.input_dim, args.latent_dim, args.sparsity_coefficient,
                                aux_coefficient=args.aux_coefficient)
    # b_dec at the geometric median of the scaled rows (the median commutes
    # with the scale).
    model.decoder.bias.assign(
        estimate_center(store, sample_rows=8192, seed=args.seed) * scale)
    dataset = store_dataset(store, args.batch_size, seed=args.seed).map(lambda x: x * scale)
    steps = args.epochs * int(np.ceil(store.num_rows / args.batch_size))
    # Warm-up, the peak lr held, a linear decay over the last 20% (issue 10).
    model.compile(optimizer=keras.optimizers.Adam(
        gsl.WarmupStableDecay(args.lr, max(steps // 20, 1), steps), beta_1=0.0),
        jit_compile=True)
    history = model.fit(dataset, epochs=args.epochs, verbose=0 if args.quiet else 2,
                        callbacks=[gsl.SparsityWarmup(max(steps // 10, 1))])
    model.normalization_scale = scale
    exported = fold_normalization(model) if scale != 1.0 else model
    exported.save(args.out)
    report = {k: float(v[-1]) for k, v in history.history.items()}
    report.update(out=str(args.out), normalization_scale=scale, rows=store.num_rows)
    print(json.dumps(report))


# ------------------------------------------------------------ the parser
def parser():
    top = argparse.ArgumentParser(prog="gated-sae", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    common = common_options()

    h = commands.add_parser("harvest", parents=[common],
                            help="collect a layer's activations into a store")
    h.add_argument("--model", required=True,
                   help="'minilm' (all-MiniLM-L6-v2, offline) or a .keras file")
    h.add_argument("--layer", required=True, help="the layer name, e.g. transformer_layer_2")
    h.add_argument("--out", required=True,
                   help="the store folder (its parent folder must exist)")
    h.add_argument("--texts", default="stdlib",
                   help="for minilm: 'stdlib' (standard-library docstrings) or a text file, "
                        "one text per line")
    h.add_argument("--inputs", help="for a .keras model: a .npy file of inputs")
    h.add_argument("--max-texts", type=_positive_int, default=2000)
    h.add_argument("--sequence-length", type=_positive_int, default=64)
    h.add_argument("--drop-special-tokens", action="store_true",
                   help="drop [CLS] and [SEP] positions (padding is always dropped)")
    h.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                   help="float16 (default) holds values up to 65504")
    h.add_argument("--shard-rows", type=_positive_int, default=65536)
    h.add_argument("--batch-size", type=_positive_int, default=32)
    h.add_argument("--resume", action="store_true",
                   help="continue an interrupted harvest (same model, layer and inputs)")
    h.set_defaults(run=_harvest)

    t = commands.add_parser("train", parents=[common], help="train a gated SAE on a store")
    t.add_argument("--store", required=True)
    t.add_argument("--out", required=True,
                   help="the .keras file to write (its folder must exist)")
    t.add_argument("--latent-dim", type=_positive_int, default=4096)
    t.add_argument("--sparsity-coefficient", type=_non_negative_float, default=1.0)
    t.add_argument("--aux-coefficient", type=_non_negative_float, default=1.0)
    t.add_argument("--epochs", type=_positive_int, default=10)
    t.add_argument("--batch-size", type=_positive_int, default=1024)
    t.add_argument("--lr", type=_positive_float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="train on raw activations (default: scale to mean squared "
                        "norm = input_dim, folded into the saved weights)")
    t.set_defaults(run=_train)
    add_evaluate_command(commands, parents=[common])
    add_interop_commands(commands, parents=[common])
    add_dashboard_command(commands, parents=[common])
    return top


def main(argv=None):
    """Runs the command line; returns the exit status (2 for a user error)."""
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("gated-sae: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if args.debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"gated-sae: error: {message}", file=sys.stderr)
        return 2
    return 0

