"""Skip transcoders of a MiniLM MLP block: ours against EleutherAI's sparsify, at equal budget.

    python -m benchmarks.quality.transcoders [--layer 3] [--max-tokens 60000]
        [--latents 6144] [--k 32] [--steps 1500] [--batch-size 512] [--lr 1e-3]
        [--seeds 0,1]

What it does, all offline:

* Data: the MLP block of transformer layer `--layer` of all-MiniLM-L6-v2
  (`load_minilm`, exact GELU) on Python stdlib docstrings (the paragraphs of
  `benchmarks.quality.minilm_activations`, split 90/10 into train/held-out
  before tokenization). One harvest of two places per batch
  (`harvest(backbone, [input, output])`): the MLP's input
  `transformer_layer_L/self_attention_layer_norm` and its output
  `transformer_layer_L/feedforward_output_dense` (before dropout and the
  residual). Padding, [CLS] and [SEP] dropped. Cached under
  `$GATED_SAE_CACHE` or `~/.cache/gated_sae_layers`.
* Runs, each on the same train rows in the same order (`--steps` batches of
  `--batch-size`, one pass, seeds `--seeds`), raw activations:
  - ours: `build_transcoder("topk", 384, 384, latents, k=k, skip=True)` at
    its defaults (AuxK; `W_dec = 0` with free rows, `W_enc` columns of norm
    1/sqrt(3), `b_dec = 0`: sparsify's start), Adam(`--lr`, epsilon 1e-8 as
    torch's), JAX.
  - sparsify (`eai-sparsify`, PyTorch, `SPARSIFY_DISABLE_TRITON=1`: its eager
    decoder): `SparseCoder(384, SparseCoderConfig(num_latents, k,
    transcode=True, skip_connection=True))`, its forward's `fvu` as the loss
    (its trainer's `loss_fn="fvu"`, `auxk_alpha=0` default), trained two ways:
    `adam` (torch Adam at `--lr`, the same as ours) and `signum` (its default
    optimizer: schedule-free SignSGD, momentum 0.95, at its default lr
    `5e-3 / sqrt(latents / 2^14)`).
  - ours, gated: `build_transcoder("gated", ..., skip=True)` steered to L0 = k
    by `TargetL0` (matched L0), Adam(`--lr`).
* Measures on the held-out rows: FVU of the MLP output `y`
  (`sum ||y - y_hat||^2 / sum ||y - mean(y)||^2`), L0, and dead latents
  (latents that fire on none of the held-out rows); seconds of training.
  Then each trained transcoder (sparsify's through our `load_sae`) is spliced
  in place of the MLP on `--splice-texts` held-out paragraphs
  (`spliced_metrics`, `input_layer=` the MLP's input): the loss is `1 - cos`
  of the mean-pooled sentence embedding against the clean model's, and loss
  recovered is against zero- and mean-ablating the MLP's output.
  Written to `benchmarks/figures/transcoders.json` and printed as a table.
"""

from benchmarks import jax_backend  # noqa: F401 - first: JAX by default

import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import cache_dir, column_table, figures_dir, machine_info, write_json

os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")


RESULT = "RESULT "


def mlp_places(layer):
    return (f"transformer_layer_{layer}/self_attention_layer_norm",
            f"transformer_layer_{layer}/feedforward_output_dense")


def harvest_pairs(layer, max_tokens, sequence_length=128, batch_size=32, seed=0,
                  test_fraction=0.1, force=False, keep_special=False):
    """`(x_train, y_train, x_test, y_test)`: the MLP's inputs and outputs, cached.

    `keep_special=True` keeps the `[CLS]` and `[SEP]` positions (padding is
    always dropped): a transcoder spliced in place of the MLP replaces it at
    every position, those included.
    """
    from benchmarks.quality import minilm_activations as source

    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    stem = (f"minilm_l6_mlp{layer}_seq{sequence_length}_tokens{max_tokens}"
            + ("_all" if keep_special else ""))
    paths = {split: out / f"{stem}_{split}.npy" for split in ("train", "test")}
    if not force and all(path.exists() for path in paths.values()):
        rows = {split: np.load(path) for split, path in paths.items()}
    else:
        from gated_sae_layers.activations import load_minilm

        paras = source.paragraphs(source.docstrings(source.stdlib_module_names()))
        random.Random(seed).shuffle(paras)
        n_test = int(round(len(paras) * test_fraction))
        splits = {"test": paras[:n_test], "train": paras[n_test:]}
        backbone, preprocessor = load_minilm(sequence_length=sequence_length)
        budget_test = int(max_tokens * test_fraction)
        budgets = {"test": budget_test, "train": max_tokens - budget_test}
        rows = {}
        for split in ("train", "test"):
            if keep_special:
                rows[split] = _harvest_all_positions(
                    splits[split], budgets[split], backbone, preprocessor,
                    list(mlp_places(layer)), batch_size)
            else:
                rows[split], _ = source.harvest_split(
                    splits[split], budgets[split], backbone, preprocessor,
                    list(mlp_places(layer)), batch_size)
            np.save(paths[split], rows[split])
    width = rows["train"].shape[1] // 2
    return (rows["train"][:, :width], rows["train"][:, width:],
            rows["test"][:, :width], rows["test"][:, width:])


def _harvest_all_positions(texts, budget, backbone, preprocessor, places, batch_size):
    """`harvest_split` keeping every non-padding position ([CLS], [SEP] too)."""
    from gated_sae_layers.activations import harvest

    rows, kept = [], 0
    for i in range(0, len(texts), batch_size):
        rows.append(harvest(backbone, places, preprocessor(texts[i:i + batch_size]),
                            batch_size=batch_size, progress=False))
        kept += len(rows[-1])
        if kept >= budget:
            break
    return np.concatenate(rows)[:budget]


def batches(rows, steps, batch_size, seed):
    """The row indices of each step: one shuffled pass (repeated if needed)."""
    order = np.concatenate([np.random.default_rng(seed + i).permutation(rows)
                            for i in range(-(-steps * batch_size // rows))])
    return order[:steps * batch_size].reshape(steps, batch_size)


def saved_dir():
    path = cache_dir() / "transcoder_runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def held_out(predict, x_test, y_test):
    latents, y_hat = predict(x_test)
    fvu = float(np.sum((y_test - y_hat) ** 2) / np.sum((y_test - y_test.mean(0)) ** 2))
    return {"fvu": fvu, "l0": float((latents > 0).sum(1).mean()),
            "dead": int((latents.max(0) <= 0).sum())}


def _predict_keras(model):
    def predict(x):
        out = model.predict(x, batch_size=2048, verbose=0)
        return np.asarray(out["latents"]), np.asarray(out["reconstruction"])

    return predict


def train_ours(architecture, data, order, args, seed, save_to):
    import keras

    import gated_sae_layers as gsl

    x, y = data
    keras.utils.set_random_seed(seed)
    if architecture == "topk":
        extra = ({} if args.ours_aux_coefficient is None
                 else {"aux_coefficient": args.ours_aux_coefficient})
        model = gsl.build_transcoder("topk", x.shape[1], y.shape[1], args.latents,
                                     k=args.k, skip=True, **extra)
        callbacks = []
    else:
        model = gsl.build_transcoder("gated", x.shape[1], y.shape[1], args.latents,
                                     sparsity_coefficient=1e-3, skip=True)
        callbacks = [gsl.TargetL0(float(args.k))]
    if args.ours_b_dec == "mean":
        model.initialize_decoder_bias(y, method="mean")
    if args.ours_encoder_scale != 1.0:
        kernel = model.get_layer("encoder").input_kernel
        kernel.assign(kernel * args.ours_encoder_scale)
    model.compile(optimizer=keras.optimizers.Adam(args.lr, epsilon=args.ours_adam_epsilon))
    rows = order.reshape(-1)
    start = time.perf_counter()
    model.fit(x[rows], y[rows], batch_size=args.batch_size, epochs=1, shuffle=False,
              verbose=0, callbacks=callbacks)
    seconds = time.perf_counter() - start
    model.save(f"{save_to}.keras")
    return _predict_keras(model), seconds


def train_sparsify(optimizer, data, order, args, seed, save_to):
    import torch
    from sparsify import SparseCoder, SparseCoderConfig

    x, y = data
    torch.manual_seed(seed)
    config = SparseCoderConfig(num_latents=args.latents, k=args.k, transcode=True,
                               skip_connection=True)
    coder = SparseCoder(x.shape[1], config)
    if optimizer == "adam":
        opt = torch.optim.Adam(coder.parameters(), lr=args.lr)
    else:
        from schedulefree import ScheduleFreeWrapper
        from sparsify.sign_sgd import SignSGD

        opt = ScheduleFreeWrapper(SignSGD(coder.parameters(), lr=5e-3 / (
            args.latents / 2 ** 14) ** 0.5), momentum=0.95)
        opt.train()
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    start = time.perf_counter()
    for rows in order:
        index = torch.from_numpy(rows)
        out = coder(x_t[index], y_t[index])
        out.fvu.backward()
        opt.step()
        opt.zero_grad()
    seconds = time.perf_counter() - start
    if optimizer != "adam":
        opt.eval()                 # schedule-free: the averaged weights
    coder.save_to_disk(save_to)    # spliced later by our loader (`load_sae`)

    @torch.no_grad()
    def predict(x_eval):
        latents, y_hat = [], []
        for i in range(0, len(x_eval), 2048):
            batch = torch.from_numpy(x_eval[i:i + 2048])
            encoded = coder.encode(batch)
            dense = torch.zeros(len(batch), args.latents)
            dense.scatter_(1, encoded.top_indices, encoded.top_acts)
            latents.append(dense.numpy())
            y_hat.append(coder(batch).sae_out.numpy())
        return np.concatenate(latents), np.concatenate(y_hat)

    return predict, seconds


def splice_all(layer, runs, texts, sequence_length=128):
    """Loss recovered of each saved run spliced in place of MLP `layer` of MiniLM.

    The loss is `1 - cos` of the mean-pooled sentence embeddings against the
    clean model's (sentence-transformers' pooling), on held-out paragraphs;
    recovered against zero- and mean-ablating the MLP's output
    (`spliced_metrics`). sparsify's folders load with our `load_sae` (exact:
    `tests/test_transcoder_proof.py`), so both run through the same splice.
    """
    import keras

    import gated_sae_layers as gsl
    from gated_sae_layers.activations import load_minilm
    from gated_sae_layers.evaluation import spliced_metrics

    backbone, preprocessor = load_minilm(sequence_length=sequence_length)
    inputs = {k: np.asarray(v) for k, v in preprocessor(texts).items()}
    mlp_in, mlp_out = mlp_places(layer)

    def sentence_loss(out, clean, padding_mask):
        weights = np.asarray(padding_mask, "float64")[..., None]

        def embed(outputs):
            pooled = (np.asarray(outputs["sequence_output"], "float64") * weights).sum(1)
            pooled /= weights.sum(1)
            return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

        return 1.0 - (embed(out) * embed(clean)).sum(1)

    results = {}
    for name, path in runs.items():
        model = (keras.saving.load_model(path) if path.endswith(".keras")
                 else gsl.load_sae(path))
        metrics = spliced_metrics(backbone, mlp_out, model, inputs, sentence_loss,
                                  targets=inputs["padding_mask"], outputs=None,
                                  batch_size=32, input_layer=mlp_in)
        results[name] = {key: float(value) for key, value in metrics.items()}
    return results


def held_out_texts(count, seed=0, test_fraction=0.1):
    """The first `count` held-out paragraphs (the split of `harvest_pairs`)."""
    from benchmarks.quality import minilm_activations as source

    paras = source.paragraphs(source.docstrings(source.stdlib_module_names()))
    random.Random(seed).shuffle(paras)
    return paras[:int(round(len(paras) * test_fraction))][:count]


RUNS = {
    "ours topk skip transcoder (Adam)": lambda *a: train_ours("topk", *a),
    "sparsify skip transcoder (Adam)": lambda *a: train_sparsify("adam", *a),
    "sparsify skip transcoder (signum, its default)": lambda *a: train_sparsify(
        "signum", *a),
    "ours gated skip transcoder, TargetL0 = k (Adam)": lambda *a: train_ours("gated", *a),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=60000)
    parser.add_argument("--latents", type=int, default=6144)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--runs", default=",".join(str(i) for i in range(len(RUNS))),
                        help="indices of the runs to do (default all)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--splice", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ours-b-dec", choices=("mean", "zero"), default="zero",
                        help="our b_dec at the start: the targets' mean, or the "
                             "builder's zero (sparsify's start)")
    parser.add_argument("--ours-aux-coefficient", type=float, default=None,
                        help="alpha of our TopK's AuxK term (default: the "
                             "builder's 1/32; sparsify trains without AuxK)")
    parser.add_argument("--ours-encoder-scale", type=float, default=1.0,
                        help="multiply our starting W_enc (columns of norm 1/sqrt(3), "
                             "`TRANSCODER_ENCODER_SCALE`) by this")
    parser.add_argument("--ours-adam-epsilon", type=float, default=1e-8,
                        help="our Adam's epsilon (default torch's 1e-8, the peer's; "
                             "Keras's default is 1e-7)")
    parser.add_argument("--tag", default="", help="suffix of the JSON's name")
    parser.add_argument("--keep-special", action="store_true",
                        help="train and test on [CLS] and [SEP] positions too (the "
                             "splice replaces the MLP there as well)")
    parser.add_argument("--splice-texts", type=int, default=256,
                        help="held-out paragraphs the spliced loss is measured on")
    args = parser.parse_args(argv)
    if args.splice:               # a worker: splice the saved runs, one JSON line
        runs = json.loads(pathlib.Path(args.splice).read_text())
        print(RESULT + json.dumps(splice_all(args.layer, runs, held_out_texts(
            args.splice_texts))), flush=True)
        return
    x_train, y_train, x_test, y_test = harvest_pairs(args.layer, args.max_tokens,
                                                     keep_special=args.keep_special)
    print(f"MLP {args.layer}: train {x_train.shape} -> {y_train.shape}, held-out "
          f"{x_test.shape}", flush=True)
    linear = np.linalg.lstsq(np.c_[x_train, np.ones(len(x_train))], y_train, rcond=None)[0]
    residual = y_test - np.c_[x_test, np.ones(len(x_test))] @ linear
    linear_fvu = float(np.sum(residual ** 2) / np.sum((y_test - y_test.mean(0)) ** 2))
    names = list(RUNS)
    if args.one:                  # a worker: one run, one seed, one JSON line
        index, seed = (int(v) for v in args.one.split(":"))
        order = batches(len(x_train), args.steps, args.batch_size, seed)
        predict, seconds = RUNS[names[index]]((x_train, y_train), order, args, seed,
                                              str(saved_dir() / f"run{index}_seed{seed}"))
        print(RESULT + json.dumps({"run": names[index], "seed": seed,
                                   "seconds": round(seconds, 1),
                                   **held_out(predict, x_test, y_test)}), flush=True)
        return
    results = []
    for index in (int(i) for i in args.runs.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            # Each run in its own process: PyTorch and JAX in one process
            # crashed here (SIGSEGV), and each run gets the machine alone.
            command = [sys.executable, "-m", "benchmarks.quality.transcoders",
                       *(argv if argv is not None else sys.argv[1:]),
                       "--one", f"{index}:{seed}"]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
            if done.returncode or not lines:
                raise RuntimeError(f"run {names[index]} seed {seed} failed "
                                   f"({done.returncode}):\n{done.stderr[-3000:]}")
            row = json.loads(lines[-1][len(RESULT):])
            results.append(row)
            print(json.dumps(row), flush=True)
    runs = {}
    for row in results:
        index = names.index(row["run"])
        path = saved_dir() / f"run{index}_seed{row['seed']}"
        runs[f"{index}:{row['seed']}"] = str(path) + (".keras" if "ours" in row["run"] else "")
    runs_file = saved_dir() / "runs.json"
    runs_file.write_text(json.dumps(runs))
    done = subprocess.run([sys.executable, "-m", "benchmarks.quality.transcoders",
                           "--layer", str(args.layer), "--splice", str(runs_file),
                           "--splice-texts", str(args.splice_texts)],
                          capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode or not lines:
        raise RuntimeError(f"the splice failed ({done.returncode}):\n{done.stderr[-3000:]}")
    spliced = json.loads(lines[-1][len(RESULT):])
    for row in results:
        metrics = spliced[f"{names.index(row['run'])}:{row['seed']}"]
        row["loss_recovered_zero"] = metrics["loss_recovered_zero_ablation"]
        row["loss_recovered_mean"] = metrics["loss_recovered_mean_ablation"]
        row["loss_spliced"] = metrics["loss_spliced"]
        row["loss_zero_ablation"] = metrics["loss_zero_ablation"]
        row["loss_mean_ablation"] = metrics["loss_mean_ablation"]
    table = column_table(results, [("run", "run", "s"), ("seed", "seed", "d"),
                                   ("held-out FVU", "fvu", ".4f"), ("L0", "l0", ".1f"),
                                   ("dead", "dead", "d"),
                                   ("spliced loss", "loss_spliced", ".5f"),
                                   ("recovered vs zero", "loss_recovered_zero", ".4f"),
                                   ("recovered vs mean", "loss_recovered_mean", ".4f"),
                                   ("train s", "seconds", ".1f")])
    print(f"\nleast-squares linear map (x -> y) held-out FVU: {linear_fvu:.4f}\n{table}")
    write_json(figures_dir() / ("transcoders" + ("_all_positions" if args.keep_special
                                                 else "") + args.tag + ".json"), {
        "arguments": vars(args), "machine": machine_info(),
        "train_rows": int(len(x_train)), "test_rows": int(len(x_test)),
        "linear_fvu": linear_fvu, "results": results})


if __name__ == "__main__":
    main()
