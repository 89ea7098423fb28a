"""The sparse training path at the sizes the field trains (issue 18).

Four measurements, each a subcommand (JAX backend; each prints Markdown):

    python -m benchmarks.throughput.sparse_scale scaling   # samples/s, latent_dim 4k -> 64k, fixed k
    python -m benchmarks.throughput.sparse_scale gated     # the gated SAE at L0 1% of its latents
    python -m benchmarks.throughput.sparse_scale memory    # XLA's buffers, dense vs sparse, 131k and 1M
    python -m benchmarks.throughput.sparse_scale store     # 2304 -> 131072 TopK from an ActivationStore

`scaling`: TopK k=32, 512 -> M, batch 1024, random rows, Adam(1e-4,
beta_1=0): the kit's `fit` on the sparse path, on the dense step (up to
`--dense-max`; it grows with M) and sparsify's step (`peers`), side by
side in one process, best of `--repeats` timings of `--steps` steps each.
The sparse step's cost should grow with `batch x k x input_dim` (the
decode and its gradients) plus the one dense encoder matmul, not with
every matmul of the step.

`gated`: a gated SAE 512 -> 4096, batch 1024, whose gate bias is set so
that `--l0` latents (41: 1%) fire per random row, which is the support a
trained model has at that L0 (the step's cost depends on the shapes and the
support, not on what the weights learned). Adam's learning rate is 1e-7 so
that the support stays put while timing (at 1e-4 random rows push it up
by half within 20 steps); the logged `l0` and `max_active_latents` show it
did. Dense step, sparse path (cap measured at the start of `fit`) and
SAELens's `GatedTrainingSAE` (dense: its cost does not depend on the
support), in one process.

`memory`: `gsl.train_step_memory` of the compiled training loop (batch
4096, `mixed_bfloat16`) of a 2304 -> 131072 and a 2304 -> 1,048,576 TopK
SAE (k=64), dense and sparse, from models built by `gsl.shapes_only_model`
(no memory behind the weights: 1M latents hold 19 GiB of float32 weights
alone). Beside it, one `(batch, latent_dim)` tensor at the compute width:
the sparse step's temporaries hold the encoder's output and little else.

`store`: writes `--rows` random rows of width 2304 to a float16
`ActivationStore`, measures the store's read rate (rows/s, the whole store
read and checksummed shard by shard), then trains a 2304 -> 131072 TopK SAE
(k=64) on it with `fit` on the sparse path for `--steps` steps (batch
`--batch`), and reports samples/s, the peak RSS of the process and the
ratio of the read rate to the rate the step consumes rows.
"""

from benchmarks import jax_backend  # noqa: F401 - first: JAX by default

import argparse
import pathlib
import resource
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import GIB, machine_info, machine_lines, markdown_table
from benchmarks.throughput.peaks import numpy_gemm_peak

ADAM = dict(learning_rate=1e-4, beta_1=0.0)


def _keras():
    import keras

    import gated_sae_layers as gsl

    return keras, gsl


def _rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _time_fit(model, x, batch, repeats):
    """Best seconds per step of `fit(x)` after a warm-up fit on the same rows."""
    model.fit(x, batch_size=batch, epochs=1, verbose=0)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(x, batch_size=batch, epochs=1, verbose=0)
        float(np.asarray(model.decoder.bias)[0])
        best = min(best, (time.perf_counter() - start) / (len(x) // batch))
    return best


def scaling(args):
    keras, gsl = _keras()
    from benchmarks.throughput import peers

    rows = []
    x = np.random.default_rng(0).standard_normal(
        (args.steps * args.batch, args.input_dim), dtype=np.float32)
    for latent_dim in args.latents:
        row = {"latent_dim": latent_dim}
        for sparse in (True, False):
            if not sparse and latent_dim > args.dense_max:
                continue
            keras.utils.set_random_seed(0)
            model = gsl.build_topk_sae(args.input_dim, latent_dim, k=args.k)
            model.compile(keras.optimizers.Adam(**ADAM), jit_compile=True, sparse=sparse)
            seconds = _time_fit(model, x, args.batch, args.repeats)
            row["sparse" if sparse else "dense"] = args.batch / seconds
            del model
        try:
            result = peers.time_sparsify(args.input_dim, latent_dim, args.batch,
                                         args.steps, 1, args.repeats, k=args.k)
            row["sparsify"] = result["samples_per_s"]
        except peers.PeerUnavailable as error:
            row["sparsify"] = None
            print(f"sparsify skipped: {error}")
        rows.append(row)
        print(row, flush=True)

    def cell(value):
        return "-" if value is None else f"{value:,.0f}"

    first = rows[0]["sparse"]
    print(f"\nTopK k={args.k}, {args.input_dim} -> M, batch {args.batch}, samples/s "
          f"(best of {args.repeats} timings of {args.steps} steps):\n")
    print(markdown_table(
        ["latent_dim M", "kit sparse", "kit dense", "sparse / dense", "sparsify",
         "sparse / sparsify", "sparse vs at 4k"],
        [[f"{r['latent_dim']:,}", cell(r["sparse"]), cell(r.get("dense")),
          "-" if r.get("dense") is None else f"{r['sparse'] / r['dense']:.2f}",
          cell(r["sparsify"]),
          "-" if r["sparsify"] is None else f"{r['sparse'] / r['sparsify']:.2f}",
          f"{r['sparse'] / first:.2f}"] for r in rows]))


def _fit_timer(model, x, batch):
    """A function giving the seconds per step of one `fit(x)`, after a warm-up fit."""
    model.fit(x, batch_size=batch, epochs=1, verbose=0)

    def once():
        start = time.perf_counter()
        model.fit(x, batch_size=batch, epochs=1, verbose=0)
        float(np.asarray(model.decoder.bias)[0])
        return (time.perf_counter() - start) / (len(x) // batch)

    return once


def gated(args):
    """The gated steps in interleaved rounds (each round times every step once,
    SAELens's included), so that a neighbour's load falls on all of them alike."""
    keras, gsl = _keras()
    from benchmarks.throughput import peers
    from benchmarks.throughput import reference_steps as ref
    from benchmarks.throughput.workers import gate_bias_for_l0

    from gated_sae_layers.models.sparse_path import plan as sparse_plan

    x = ref.random_batches(args.steps, args.batch, args.input_dim)
    steps = []
    default_blocks = sparse_plan.ROW_BLOCKS
    for sparse, blocks, kernels in [(False, None, "auto")] + [
            (True, b, k) for b in args.row_blocks for k in args.kernels]:
        # The A/B of the row blocks sets the kit's constant for one model.
        sparse_plan.ROW_BLOCKS = blocks or default_blocks
        keras.utils.set_random_seed(0)
        model = gsl.build_gated_sae(args.input_dim, args.gated_latents,
                                    sparsity_coefficient=1e-3)
        model.encoder.gate_bias.assign(gate_bias_for_l0(model, argparse.Namespace(
            gated_l0=args.l0, latent_dim=args.gated_latents, input_dim=args.input_dim)))
        model.compile(keras.optimizers.Adam(1e-7, beta_1=0.0), jit_compile=True,
                      sparse=sparse, sparse_kernels=kernels)
        timer = _fit_timer(model, x, args.batch)
        plan = model.sparse_plan
        label = "kit dense step" if not sparse else (
            "kit sparse path" + ("" if blocks == default_blocks
                                 else f" ({blocks} row blocks)")
            + f", {plan.kernels} kernels")
        steps.append((label, model, plan, timer))
    sparse_plan.ROW_BLOCKS = default_blocks

    def saelens_once():
        result = peers.time_saelens(args.input_dim, args.gated_latents, args.batch,
                                    args.steps, 1, 1)
        return 1.0 / result["samples_per_s"] * args.batch

    timers = {label: timer for label, _, _, timer in steps}
    try:
        saelens_once()                      # import and warm up
        timers["SAELens GatedTrainingSAE"] = saelens_once
    except peers.PeerUnavailable as error:
        print(f"SAELens skipped: {error}")
    best = {label: float("inf") for label in timers}
    for round_ in range(args.repeats):
        this_round = {}
        for label, once in timers.items():
            this_round[label] = once()
            best[label] = min(best[label], this_round[label])
        print(f"round {round_ + 1} (samples/s): " + ", ".join(
            f"{label} {args.batch / seconds:,.0f}" for label, seconds in this_round.items()),
            flush=True)
    rows = []
    for label, model, plan, _ in steps:
        logs = model.fit(x, batch_size=args.batch, epochs=1, verbose=0).history
        rows.append([label, f"{args.batch / best[label]:,.0f}", f"{logs['l0'][-1]:.1f}",
                     f"{logs.get('max_active_latents', [float('nan')])[-1]:.0f}",
                     "-" if plan is None else f"{plan.slots}",
                     f"{logs.get('sparse_fallbacks', [0])[-1]:.0f}"])
    if "SAELens GatedTrainingSAE" in best:
        rows.append(["SAELens GatedTrainingSAE",
                     f"{args.batch / best['SAELens GatedTrainingSAE']:,.0f}",
                     "-", "-", "-", "-"])
    print(f"\nGated SAE {args.input_dim} -> {args.gated_latents:,}, batch {args.batch}, "
          f"gate bias at L0 {args.l0:g} (samples/s, best of {args.repeats} interleaved "
          "rounds):\n")
    print(markdown_table(["step", "samples/s", "l0", "max_active_latents", "slots",
                          "fallbacks (last epoch)"], rows))
    rate = {row[0]: float(row[1].replace(",", "")) for row in rows}
    for label, sparse_rate in rate.items():
        if label.startswith("kit sparse path"):
            print(f"\n{label} / dense: {sparse_rate / rate['kit dense step']:.2f}"
                  + (f"; / SAELens: {sparse_rate / rate['SAELens GatedTrainingSAE']:.2f}"
                     if "SAELens GatedTrainingSAE" in rate else ""))


def memory(args):
    keras, gsl = _keras()
    keras.config.set_dtype_policy(args.policy)
    compute_bytes = 2 if "16" in args.policy else 4
    rows = []
    for latent_dim in args.memory_latents:
        activations = args.memory_batch * latent_dim * compute_bytes
        for sparse in (False, True):
            started = time.perf_counter()
            model = gsl.shapes_only_model(
                lambda m=latent_dim: gsl.build_topk_sae(args.memory_input_dim, m,
                                                        k=args.memory_k),
                keras.optimizers.Adam(**ADAM), sparse=sparse)
            result = gsl.train_step_memory(model, args.memory_batch,
                                           chunk_rows=args.memory_batch)
            weights = sum(int(np.prod(v.shape)) * 4 for v in model.trainable_variables)
            rows.append([f"{args.memory_input_dim} -> {latent_dim:,}",
                         "sparse" if sparse else "dense",
                         f"{weights / GIB:.2f}",
                         f"{result['argument_bytes'] / GIB:.2f}",
                         f"{result['temp_bytes'] / GIB:.2f}",
                         f"{result['peak_bytes'] / GIB:.2f}",
                         f"{activations / GIB:.2f}",
                         f"{result['temp_bytes'] / activations:.2f}",
                         f"{time.perf_counter() - started:.0f}"])
            print(rows[-1], f"RSS {_rss_gib():.2f} GiB", flush=True)
            del model
    print(f"\nXLA buffer assignment of the compiled training loop, TopK "
          f"k={args.memory_k}, batch {args.memory_batch}, {args.policy} "
          f"(GiB; peak = arguments + outputs - aliased + temporaries):\n")
    print(markdown_table(
        ["SAE", "step", "float32 weights", "arguments", "temporaries", "peak",
         "one (batch, latents) tensor", "temporaries / that tensor", "compile s"],
        rows))


def store(args):
    keras, gsl = _keras()
    from gated_sae_layers.activations import ActivationStore

    folder = pathlib.Path(args.folder or tempfile.mkdtemp(prefix="sparse_store_"))
    path = folder / "rows"
    rng = np.random.default_rng(0)
    if not path.exists():
        created = ActivationStore.create(path, args.store_input_dim, "float16",
                                         shard_rows=args.shard_rows)
        for start in range(0, args.rows, args.shard_rows):
            count = min(args.shard_rows, args.rows - start)
            created.append(rng.standard_normal((count, args.store_input_dim),
                                               dtype=np.float32))
        created.close()
    activations = ActivationStore.open(path)
    started = time.perf_counter()
    read = 0
    for index in range(activations.num_shards):
        shard = activations.read_shard(index)
        read += int(np.asarray(shard, dtype=np.float32).shape[0])
    read_rate = read / (time.perf_counter() - started)
    print(f"store: {activations.num_rows:,} rows x {activations.input_dim} float16 in "
          f"{activations.num_shards} shards; read + checksum + float32: "
          f"{read_rate:,.0f} rows/s", flush=True)

    keras.utils.set_random_seed(0)
    model = gsl.build_topk_sae(args.store_input_dim, args.store_latents, k=args.store_k)
    model.compile(keras.optimizers.Adam(**ADAM), jit_compile=True, sparse=True)
    print(f"model built; RSS {_rss_gib():.2f} GiB; {model.sparse_path_reason}", flush=True)
    steps_per_epoch = activations.num_rows // args.batch
    epochs = max(1, args.steps // steps_per_epoch)
    started = time.perf_counter()
    history = model.fit(activations, batch_size=args.batch, epochs=1, verbose=0)
    first = time.perf_counter() - started
    print(f"first epoch ({steps_per_epoch} steps, compile included): {first:.0f} s",
          flush=True)
    started = time.perf_counter()
    history = model.fit(activations, batch_size=args.batch, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - started
    steps = epochs * steps_per_epoch
    rate = steps * args.batch / seconds
    print(f"\n2304 -> {args.store_latents:,} TopK k={args.store_k}, batch {args.batch}, "
          f"from the store, sparse path:\n")
    print(markdown_table(
        ["steps timed", "samples/s", "s/step", "peak RSS GiB", "store rows/s",
         "store / step consumption", "final loss", "l0"],
        [[f"{steps}", f"{rate:,.0f}", f"{seconds / steps:.2f}", f"{_rss_gib():.2f}",
          f"{read_rate:,.0f}", f"{read_rate / rate:.0f}x",
          f"{history.history['loss'][-1]:.4f}", f"{history.history['l0'][-1]:.1f}"]]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("scaling", "gated", "memory", "store"))
    parser.add_argument("--input-dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latents", type=int, nargs="+",
                        default=[4096, 8192, 16384, 32768, 65536])
    parser.add_argument("--dense-max", type=int, default=16384,
                        help="largest latent_dim timed on the dense step")
    parser.add_argument("--gated-latents", type=int, default=4096)
    parser.add_argument("--l0", type=float, default=41.0)
    parser.add_argument("--row-blocks", type=int, nargs="+", default=[4],
                        help="gated: one sparse run per value of the sparse step's "
                             "row blocks (the kit's ROW_BLOCKS is 4)")
    parser.add_argument("--kernels", nargs="+", default=["auto", "xla"],
                        choices=("auto", "numba", "xla"),
                        help="gated: the sparse path with each of these sparse_kernels")
    parser.add_argument("--policy", default="mixed_bfloat16")
    parser.add_argument("--memory-latents", type=int, nargs="+",
                        default=[131072, 1048576])
    parser.add_argument("--memory-input-dim", type=int, default=2304)
    parser.add_argument("--memory-batch", type=int, default=4096)
    parser.add_argument("--memory-k", type=int, default=64)
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--shard-rows", type=int, default=8192)
    parser.add_argument("--store-input-dim", type=int, default=2304)
    parser.add_argument("--store-latents", type=int, default=131072)
    parser.add_argument("--store-k", type=int, default=64)
    parser.add_argument("--folder", help="where the store is written (default: a "
                                         "temporary folder; an existing store is reused)")
    args = parser.parse_args()
    if args.part == "store" and "--steps" not in sys.argv:
        args.steps = 256

    info = machine_info()
    print(f"# The sparse path at scale: {args.part} "
          f"({time.strftime('%Y-%m-%d %H:%M:%S %Z')})")
    print("\n".join(machine_lines(info)))
    gemm = numpy_gemm_peak(4096, 3)
    print(f"numpy float32 GEMM 4096^3: best {gemm['best_gflops']:.1f} GFLOP/s\n",
          flush=True)
    {"scaling": scaling, "gated": gated, "memory": memory,
     "store": store}[args.part](args)
    print(f"\npeak RSS {_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
