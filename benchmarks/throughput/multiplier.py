"""What does the recipe's decoder learning-rate multiplier cost a step?

    python -m benchmarks.throughput.multiplier [--input-dim 512] [--latent-dim 4096]
        [--batch-size 1024] [--steps 32] [--rounds 5] [--sparse auto]

Side by side in one process, interleaved rounds: the same gated SAE, Adam
step and rows, trained by the stock `fit` with the paper's constant step
(`decoder_learning_rate_multiplier=1.0`) and with the recipe's
`gsl.falling_multiplier(steps)`. Prints samples/s (best and median of the
rounds), their ratio, the CPU flags and numpy's float32 GEMM rate.
"""

from benchmarks import quiet_logs  # noqa: F401 - first: before keras

import argparse
import statistics
import time

import keras
import numpy as np

import gated_sae_layers as gsl
from benchmarks.common import machine_info, machine_summary, markdown_table
from benchmarks.throughput.peaks import numpy_gemm_peak


def _cpu_flags():
    try:
        text = open("/proc/cpuinfo").read().split()
    except OSError:
        return "unknown"
    return ", ".join(sorted({f for f in ("avx2", "avx512f") if f in text})) or "neither"


def _model(args, multiplier):
    keras.utils.set_random_seed(0)
    model = gsl.build_gated_sae(args.input_dim, args.latent_dim, 1.0,
                                decoder_learning_rate_multiplier=multiplier)
    sparse = {"auto": "auto", "on": True, "off": False}[args.sparse]
    model.compile(optimizer=keras.optimizers.Adam(1e-4, beta_1=0.0), jit_compile=True,
                  sparse=sparse)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-dim", type=int, default=512)
    parser.add_argument("--latent-dim", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=32, help="steps per timed fit")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sparse", choices=("auto", "on", "off"), default="off")
    args = parser.parse_args(argv)
    rows = np.random.default_rng(0).normal(
        size=(args.batch_size * args.steps, args.input_dim)).astype("float32")
    models = {"constant step (the paper)": _model(args, 1.0),
              "falling_multiplier (the recipe)": _model(
                  args, gsl.falling_multiplier(10 * args.steps * args.rounds))}
    for model in models.values():          # compile and warm up
        model.fit(rows, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    seconds = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(rows, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
            seconds[name].append(time.perf_counter() - start)
    gemm = numpy_gemm_peak(4096, 5)["best_gflops"]
    print(f"{machine_summary(machine_info())}; flags {_cpu_flags()}; numpy float32 GEMM "
          f"4096^3 {gemm:.0f} GFLOP/s; keras {keras.__version__} on "
          f"{keras.backend.backend()}")
    print(f"gated {args.input_dim} -> {args.latent_dim}, batch {args.batch_size}, "
          f"{args.steps} steps per timing, {args.rounds} interleaved rounds, "
          f"sparse={args.sparse}\n")
    rate = {name: [len(rows) / s for s in values] for name, values in seconds.items()}
    print(markdown_table(
        ["step", "samples/s (best)", "samples/s (median)"],
        [[name, f"{max(r):,.0f}", f"{statistics.median(r):,.0f}"]
         for name, r in rate.items()]))
    plain, recipe = rate.values()
    print(f"\nrecipe / constant (best): {max(recipe) / max(plain):.3f}; "
          f"(median): {statistics.median(recipe) / statistics.median(plain):.3f}")


if __name__ == "__main__":
    main()
