"""Training throughput of a gated SAE: the kit's stock `fit` against references.

Measures training samples/second of `gsl.build_gated_sae(D, M)` with the
stock `model.fit`, and of the strongest references of the same paper-exact
gated step, side by side in one run, then prints our ratio to each:

    ours (the kit's stock `model.fit(x, batch_size=B, epochs=E, verbose=0)`
    on a numpy array, as a user calls it; timed with a read-back of one
    variable at the end), on the dense step (`compile(sparse=False)`):
      tf                KERAS_BACKEND=tensorflow, compile(jit_compile=False)
      tf-xla            KERAS_BACKEND=tensorflow, compile(jit_compile=True)
      jax               KERAS_BACKEND=jax (the train step is always jitted)
      jax-bf16          jax under keras.config.set_dtype_policy("mixed_bfloat16")
    and on the sparse path (`compile(sparse=True)`, `docs/sparse_training.md`):
      tf-xla-sparse, jax-sparse, jax-sparse-bf16
    references (`reference_steps`: the same math, init and Adam, by hand,
    batches already on the device)
      hand-jax          one `jax.jit` step, Adam by hand, float32
      hand-jax-bf16     the same with bfloat16 matmul inputs (float32
                        parameters and Adam state), `block_until_ready`
      torch             PyTorch eager, float32 (TF32 matmuls on a GPU, as XLA)
      torch-bf16        PyTorch eager under torch.autocast(bfloat16)
      torch-compile     the loss `torch.compile`d (inductor; needs a C
      torch-compile-bf16  compiler on a CPU), fused Adam
    peers (`peers`, each optional: skipped, with the reason, if missing)
      saelens, saelens-bf16                  SAELens 6.x SAETrainer.step
      sparsify, saelens-topk                 the TopK peers (--architecture topk):
                                             EleutherAI's sparsify, SAELens TopK
      dictionary-learning, dictionary-learning-bf16   GatedSAETrainer.update
      gated-sae-tf, gated-sae-tf-xla         gated-sae-tf 0.1.1 `fit`

`--configs` takes names and the presets `kit`, `refs`, `peers`, `all`
(default), `sparse` (dense and sparse twins), `topk` (the kit dense and
sparse beside sparsify and SAELens) and `gpu` (everything but TensorFlow).
`--architecture topk --k 32` times the TopK SAE instead of the gated one
(the hand-written references and gated peers skip); `--gated-l0 L` gives
the gated SAE a gate bias at which about `L` latents fire per row (the
support of a trained model at that L0; the tied initialization fires half
of them, which the sparse path trains densely). Installing the optional
packages (none is a dependency of the kit; do not add them to
pyproject.toml):

    pip install torch==2.13.0+cpu   # a CPU wheel where one is at hand (plain
                                    # `pip install torch` pulls ~3 GB of CUDA)
    pip install sae-lens
    pip install --no-deps dictionary-learning einops
    pip install --no-deps gated-sae-tf

The Keras backend is fixed when `keras` is imported, so the configurations
run in subprocesses: this entry point re-invokes itself (`python -m
benchmarks.throughput --worker NAMES`, from the repository root) with the
hidden `--worker` flag and `KERAS_BACKEND` set; the worker prints one JSON line
per configuration (prefixed by a marker) and the parent gathers them into
Markdown tables. Each kit configuration has a process of its own; the
variants of one reference or peer share one (`--no-share` gives each its
own), which saves start-up and compile time on a GPU. A configuration that
fails (exception, crash, timeout) or is skipped is reported in the table
and the others still run.

Sizes: `--size DxM` (default 512x4096) with `--batch B` (default 1024), or
a comma-separated list `DxM@B[:PRECISION]`, e.g. the GPU sizes
`2048x32768@4096,768x24576@4096,512x4096@1024,2304x131072@4096:bfloat16`
(`:bfloat16` runs only the bfloat16 configurations at that size).

Method, per configuration and size: random float32 data of `--steps`
batches; a warm-up (one short `fit` of 2 batches for the kit, 2 steps for
the others) so that tracing/compilation is excluded; then `--repeats`
timings of `--epochs` passes over the batches (`steps * epochs` steps; with
`--min-time S` the passes are scaled up until one timing lasts at least S
seconds), `time.perf_counter` around each, ending with a read-back or
`block_until_ready`/`synchronize`. The best timing is reported, the median
beside it. With `--rounds N` every configuration runs N times, all of them in
turn, and each keeps its best round. Ratio columns: "ours / hand-jax" divides our samples/s by the
hand-written JAX step's at the same precision, "ours / torch" by the faster
PyTorch step (eager or compiled) at the same precision; a second table gives
our ratio to every reference and peer (>1: ours is faster).

Work per step is counted as 7 matmuls of batch x D x M (2*B*D*M FLOPs
each): 3 forward (encoder, decoder, frozen aux decoder) and 4 backward
(decoder weight and input gradients, aux-decoder input gradient - the frozen
decoder gets no weight gradient - and the encoder weight gradient). That is
a lower bound: the compiled gradient graph also holds an 8th matmul, the
encoder's input gradient, which the decoder bias `b_dec` needs (it enters
the encoder as `x - b_dec`). SAELens does more (3 encoder matmuls forward).

The reference peak is this machine's float32 GEMM rate: numpy matmul of
`--gemm-n` square matrices, best of `--gemm-reps`, before the configurations
and after them (the best of both is used). Where a GPU is present
(nvidia-smi lists one) the GPU GEMM peaks are measured with `jax.numpy.matmul`
+ `block_until_ready`: float32 at the default precision (TF32 on Hopper, as
the SAE training uses), at HIGHEST (true float32) and bfloat16. A float32
row on the GPU is compared with the default-precision peak, a bfloat16 row
with the bfloat16 peak, a CPU row with the numpy peak.

Device memory: on a GPU each row reports the peak device memory its step
used (`jax.devices()[0].memory_stats()["peak_bytes_in_use"]`,
`torch.cuda.max_memory_allocated()`), next to an estimate: float32
weights + Adam state (two moments) + gradients + activations (about eight
batch x M tensors at the compute width). The hand-written JAX step also
reports XLA's own `memory_analysis()` of the compiled step.

`--profile DIR` writes a `jax.profiler` trace of 3 stock-fit steps (jax,
jax-bf16) and of 3 hand-written steps (hand-jax, hand-jax-bf16) per size
under DIR/<size>/<config>/ (open with TensorBoard's profile plugin or
Perfetto). `--verify` instead trains 3 steps of a tiny SAE from the same
weights in our fit, the hand-written JAX step and the PyTorch step, and
prints the largest weight differences (the "same math" check).

Usage (from the repository root):

    python -m benchmarks.throughput                     # CPU, everything, ~15 min
    python -m benchmarks.throughput --configs kit,refs  # without the peers
    python -m benchmarks.throughput --configs tf,jax --repeats 2
    python -m benchmarks.throughput --verify            # same-math check, ~1 min
    python -m benchmarks.throughput --architecture topk --configs topk \
        --size 512x4096@1024,768x16384@1024     # the sparse path vs sparsify
    python -m benchmarks.throughput --configs sparse,saelens,dictionary-learning \
        --gated-l0 41                           # gated at L0 1% of 4096
    python -m benchmarks.throughput --device-info       # CPU/GPU summary only
    bash benchmarks/gpu_check.sh                        # H200: all GPU sizes

No thread environment variables are set: TensorFlow, XLA:CPU, PyTorch and
OpenBLAS all default to every core of the machine.
"""

import argparse
import os
import sys
import time

from benchmarks.common import machine_info, machine_lines, write_json
from benchmarks.throughput import reference_steps as ref
from benchmarks.throughput.configs import (
    CONFIGS, PRESETS, parse_configs, parse_sizes, process_groups, size_tag)
from benchmarks.throughput.parent import public_args, run_group, spawn
from benchmarks.throughput.peaks import both_cpu_peaks, numpy_gemm_peak
from benchmarks.throughput.report import (
    add_ratios, print_closing, print_size, versions_of)
from benchmarks.throughput.verify import verify_config, verify_main
from benchmarks.throughput.workers import run_config, run_worker


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="all",
                        help="comma-separated config names and presets "
                             f"({', '.join(PRESETS)}); default all")
    parser.add_argument("--size", default=None,
                        help="DxM (default 512x4096), or a comma-separated list "
                             "of DxM@B[:PRECISION], e.g. 2048x32768@4096")
    parser.add_argument("--batch", "--batch-size", dest="batch_size", type=int,
                        default=1024, help="batch size where --size names none "
                                           "(default 1024)")
    parser.add_argument("--input-dim", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--latent-dim", type=int, default=4096, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=16,
                        help="batches in the random data set = steps per epoch "
                             "(default 16)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="passes over the batches per timing (default 2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timings per configuration; the best is reported "
                             "(default 3)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every configuration this many times, one after the "
                             "other in turn, and keep each one's best round (interleaved "
                             "rounds: a busy moment of the host then falls on all of "
                             "them alike)")
    parser.add_argument("--min-time", type=float, default=0.0,
                        help="scale the passes up until one timing lasts at least "
                             "this many seconds (default 0: off)")
    parser.add_argument("--architecture", choices=("gated", "topk"), default="gated",
                        help="the SAE timed (default gated); topk compares the "
                             "kit with sparsify and SAELens's TopK")
    parser.add_argument("--k", type=int, default=32,
                        help="active latents per row of the TopK SAE (default 32)")
    parser.add_argument("--gated-l0", type=float, default=0.0,
                        help="set the gated SAE's gate bias so that about this "
                             "many latents fire per row (default 0: the tied "
                             "initialization, half of them)")
    parser.add_argument("--sparse-cap", type=int, default=0,
                        help="compile(sparse_cap=...) of the sparse configs "
                             "(default 0: measured on the data)")
    parser.add_argument("--remove-parallel-gradient", action="store_true",
                        help="build_gated_sae(remove_parallel_gradient=True) and "
                             "the same projection in the hand-written steps")
    parser.add_argument("--torch-device", default=None,
                        help="device of the PyTorch steps (default cuda if "
                             "available, else cpu)")
    parser.add_argument("--no-share", dest="share", action="store_false",
                        help="one process per configuration, references too")
    parser.add_argument("--profile", metavar="DIR",
                        help="write jax.profiler traces of 3 stock-fit and 3 "
                             "hand-written steps per size under DIR")
    parser.add_argument("--verify", action="store_true",
                        help="same-math check of ours vs the hand-written steps "
                             "(tiny size: use --size 16x64@32)")
    parser.add_argument("--gemm-n", type=int, default=4096,
                        help="size of the numpy square GEMM (default 4096)")
    parser.add_argument("--gpu-gemm-n", type=int, default=8192,
                        help="size of the GPU square GEMM (default 8192)")
    parser.add_argument("--gemm-reps", type=int, default=5,
                        help="timed GEMM repetitions, best is the peak (default 5)")
    parser.add_argument("--timeout", type=int, default=900,
                        help="seconds allowed per worker subprocess (default 900)")
    parser.add_argument("--time-budget", type=float, default=0.0,
                        help="seconds for the whole run: workers that would start "
                             "after it are skipped and a running one is cut "
                             "(default 0: no limit)")
    parser.add_argument("--json", metavar="PATH",
                        help="also write all results to this JSON file (rewritten "
                             "after every worker)")
    parser.add_argument("--log-dir", metavar="DIR",
                        help="append every worker's stdout/stderr to DIR/workers.log")
    parser.add_argument("--device-info", action="store_true",
                        help="print CPU count, memory and GPU presence, then exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args, verify_config if args.verify else run_config)
    for flag in ("steps", "epochs", "repeats", "rounds", "batch_size", "gemm_reps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1. "
                         f"Received: {getattr(args, flag)}")
    args.config_list = parse_configs(args.configs, parser)
    args.sizes = parse_sizes(args, parser)
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    if args.profile:
        args.profile = os.path.abspath(args.profile)
        os.makedirs(args.profile, exist_ok=True)

    info = machine_info()
    if args.device_info:
        print("\n".join(machine_lines(info)))
        return 0
    if args.verify:
        size = args.sizes[0]
        args.input_dim, args.latent_dim, args.batch_size = (
            size["input_dim"], size["latent_dim"], size["batch_size"])
        return verify_main(args)
    return run_benchmark(args, info)


def best_rounds(results):
    """`results` with one row per config: its fastest round (a failed round
    counts only where no round succeeded), in the order the configs came.

    >>> best_rounds([{"worker": "a", "samples_per_s": 2.0}, {"worker": "b", "error": "x"},
    ...              {"worker": "a", "samples_per_s": 3.0},
    ...              {"worker": "b", "samples_per_s": 1.0}])
    [{'worker': 'a', 'samples_per_s': 3.0}, {'worker': 'b', 'samples_per_s': 1.0}]
    """
    best = {}
    for result in results:
        name = result["worker"]
        kept = best.get(name)
        if kept is None or ("samples_per_s" in result and (
                "samples_per_s" not in kept
                or result["samples_per_s"] > kept["samples_per_s"])):
            best[name] = result
    return list(best.values())


def run_benchmark(args, info):
    """Every configuration at every size; prints the tables, writes `--json`."""
    started = time.perf_counter()

    def remaining():
        if args.time_budget <= 0:
            return None
        return args.time_budget - (time.perf_counter() - started)

    print(f"# Gated SAE training throughput ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})")
    print("\n".join(machine_lines(info)))
    print(f"Configs: {', '.join(args.config_list)}; {args.steps} batches x "
          f"{args.epochs} epochs per timing"
          + (f" (scaled to >= {args.min_time:g} s)" if args.min_time else "")
          + f", best of {args.repeats}"
          + (f" in each of {args.rounds} interleaved rounds" if args.rounds > 1 else "")
          + f"; Adam(lr={ref.ADAM['learning_rate']:g}, "
          f"beta_1={ref.ADAM['beta_1']:g}), lambda={ref.SPARSITY_COEFFICIENT:g}, "
          f"remove_parallel_gradient={args.remove_parallel_gradient}")

    gemm_start = numpy_gemm_peak(args.gemm_n, args.gemm_reps)
    peaks = {"cpu": dict(gemm_start, start=gemm_start)}
    print(f"numpy float32 GEMM {args.gemm_n}^3 before the configs: best "
          f"{gemm_start['best_gflops']:.1f} GFLOP/s (median "
          f"{gemm_start['median_gflops']:.1f}, {args.gemm_reps} reps)")
    if info["gpu_present"]:
        gpu = spawn(["gpu-gemm"], args, args.sizes[0], timeout=300)[0]
        peaks["gpu"] = gpu
        if "error" in gpu:
            print(f"GPU GEMM peak: FAILED: {gpu['error']}")
        else:
            print(f"GPU GEMM {gpu['n']}^3 ({gpu['library']}, {gpu['device']}): "
                  f"float32 default precision {gpu['default_gflops']:,.0f} GFLOP/s, "
                  f"HIGHEST {gpu['highest_gflops']:,.0f}, bfloat16 "
                  f"{gpu.get('bf16_gflops', float('nan')):,.0f}")
    sys.stdout.flush()

    payload = {"args": public_args(args), "machine": info, "peaks": peaks,
               "sizes": []}
    for size in args.sizes:
        names = [n for n in args.config_list
                 if size["precision"] in (None, CONFIGS[n].precision)]
        entry = {"size": size_tag(size), **size, "results": []}
        payload["sizes"].append(entry)
        for _ in range(args.rounds):
            for group in process_groups(names, args.share):
                entry["results"] = best_rounds(entry["results"] + run_group(
                    group, size, args, remaining()))
                entry["ratios"] = add_ratios(entry["results"])
                write_json(args.json, payload)

    gemm_end = numpy_gemm_peak(args.gemm_n, args.gemm_reps)
    peaks["cpu"] = both_cpu_peaks(gemm_start, gemm_end)
    print(f"numpy float32 GEMM {args.gemm_n}^3 after the configs: best "
          f"{gemm_end['best_gflops']:.1f} GFLOP/s; CPU peak used = best of both: "
          f"{peaks['cpu']['best_gflops']:.1f} GFLOP/s")

    for entry in payload["sizes"]:
        print_size(entry, peaks)
    versions = versions_of(payload["sizes"])
    total = time.perf_counter() - started
    print_closing(info, versions, total)
    payload.update(versions=versions, total_wall_s=total)
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
