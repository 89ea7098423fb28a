"""`gated-sae`: harvest activations to a store, and train an SAE from a store.

    gated-sae harvest --model minilm --layer transformer_layer_2 --texts stdlib --out store/
    gated-sae harvest --model classifier.keras --layer hidden --inputs x.npy --out store/
    gated-sae train --store store/ --latent-dim 4096 --sparsity-coefficient 1.0 --out sae.keras

The same options as the Python API (`harvest`, `ActivationStore`,
`store_dataset`, `build_sae`/`build_gated_sae`, `estimate_norm_scale`,
`fold_normalization`).
"""

import argparse
import json
import pathlib
import sys

import numpy as np


def _harvest(args):
    import keras

    from gated_sae_layers.activations import ActivationStore
    from gated_sae_layers.activations.harvest import harvest

    metadata = {"model": args.model, "layer": args.layer}
    drop = ()
    if args.model == "minilm":
        from gated_sae_layers.activations.minilm import load_minilm, stdlib_docstrings

        model, preprocessor = load_minilm(args.sequence_length)
        if args.texts == "stdlib":
            texts = stdlib_docstrings(max_texts=args.max_texts)
        else:
            texts = [line.strip() for line in pathlib.Path(args.texts).read_text().splitlines()
                     if line.strip()][:args.max_texts]
        inputs = {k: np.asarray(v) for k, v in preprocessor(texts).items()}
        drop = tuple(int(t) for t in (preprocessor.tokenizer.cls_token_id,
                                      preprocessor.tokenizer.sep_token_id)) \
            if args.drop_special_tokens else ()
        metadata.update(texts=args.texts, num_texts=len(texts),
                        sequence_length=args.sequence_length)
    else:
        if not args.inputs:
            raise SystemExit("`--inputs FILE.npy` is needed with a .keras model.")
        model = keras.saving.load_model(args.model)
        inputs = np.load(args.inputs, allow_pickle=False)
    if args.resume:
        store = ActivationStore.create(args.out, _width(model, args.layer, inputs),
                                       args.dtype, args.shard_rows, metadata, resume=True)
    else:
        store = ActivationStore.create(args.out, _width(model, args.layer, inputs),
                                       args.dtype, args.shard_rows, metadata)
    harvest(model, args.layer, inputs, batch_size=args.batch_size, store=store,
            drop_token_ids=drop, progress=not args.quiet)
    print(json.dumps({"store": str(args.out), "rows": store.num_rows,
                      "shards": store.num_shards, "input_dim": store.input_dim}))


def _width(model, layer, inputs):
    from gated_sae_layers.activations.harvest import harvest

    import keras

    first = keras.tree.map_structure(lambda a: a[:1], inputs)
    return harvest(model, layer, first, progress=False).shape[-1]


def _train(args):
    import keras

    import gated_sae_layers as gsl
    from gated_sae_layers.activations import ActivationStore, store_dataset
    from gated_sae_layers.activations.normalization import (
        estimate_norm_scale, fold_normalization)

    store = ActivationStore.open(args.store)
    scale = estimate_norm_scale(store) if args.normalize else 1.0
    model = gsl.build_gated_sae(store.input_dim, args.latent_dim, args.sparsity_coefficient,
                                aux_coefficient=args.aux_coefficient)
    sample = store.read_shard(0)[: 8192].astype("float32") * scale
    model.decoder.bias.assign(sample.mean(axis=0))
    dataset = store_dataset(store, args.batch_size, seed=args.seed).map(lambda x: x * scale)
    steps = args.epochs * int(np.ceil(store.num_rows / args.batch_size))
    model.compile(optimizer=keras.optimizers.Adam(
        gsl.WarmupCosineDecay(args.lr, max(steps // 20, 1), steps + 1), beta_1=0.0),
        jit_compile=True)
    history = model.fit(dataset, epochs=args.epochs, verbose=0 if args.quiet else 2,
                        callbacks=[gsl.SparsityWarmup(max(steps // 10, 1))])
    model.normalization_scale = scale
    exported = fold_normalization(model) if scale != 1.0 else model
    exported.save(args.out)
    report = {k: float(v[-1]) for k, v in history.history.items()}
    report.update(out=str(args.out), normalization_scale=scale, rows=store.num_rows)
    print(json.dumps(report))


def parser():
    top = argparse.ArgumentParser(prog="gated-sae", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)

    h = commands.add_parser("harvest", help="collect a layer's activations into a store")
    h.add_argument("--model", required=True,
                   help="'minilm' (all-MiniLM-L6-v2, offline) or a .keras file")
    h.add_argument("--layer", required=True, help="the layer name, e.g. transformer_layer_2")
    h.add_argument("--out", required=True, help="the store folder")
    h.add_argument("--texts", default="stdlib",
                   help="for minilm: 'stdlib' (standard-library docstrings) or a text file, "
                        "one text per line")
    h.add_argument("--inputs", help="for a .keras model: a .npy file of inputs")
    h.add_argument("--max-texts", type=int, default=2000)
    h.add_argument("--sequence-length", type=int, default=64)
    h.add_argument("--drop-special-tokens", action="store_true",
                   help="drop [CLS] and [SEP] positions (padding is always dropped)")
    h.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    h.add_argument("--shard-rows", type=int, default=65536)
    h.add_argument("--batch-size", type=int, default=32)
    h.add_argument("--resume", action="store_true", help="continue an interrupted harvest")
    h.add_argument("--quiet", action="store_true")
    h.set_defaults(run=_harvest)

    t = commands.add_parser("train", help="train a gated SAE on a store")
    t.add_argument("--store", required=True)
    t.add_argument("--out", required=True, help="the .keras file to write")
    t.add_argument("--latent-dim", type=int, default=4096)
    t.add_argument("--sparsity-coefficient", type=float, default=1.0)
    t.add_argument("--aux-coefficient", type=float, default=1.0)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=1024)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="train on raw activations (default: scale to mean squared "
                        "norm = input_dim, folded into the saved weights)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(run=_train)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
