"""`gsl.TargetL0`: does the L0 you ask for come out, and is it as good as a hand-tuned one?

    python -m benchmarks.quality.target_l0 [--datasets mnist minilm] [--backends jax tensorflow]

For each dataset, backend and target L0 in 8, 16, 32, 64, 128 this trains a
gated SAE with the README recipe (Adam(beta_1=0) with WarmupStableDecay,
b_dec at the geometric median, a sparsity warm-up over the first 10% of
steps) and `gsl.TargetL0(target)` at its defaults, then reads the held-out
L0 and FVU. For the frontier it trains the same recipe with fixed
coefficients (a sweep, JAX) and interpolates the fixed-coefficient FVU at
each controlled run's held-out L0 (linear in log L0 between sweep points):
`fvu / fvu_fixed` near 1 means the controller lands on the hand-tuned
frontier.

Datasets (`benchmarks.quality.pareto.load_dataset`): `mnist` (4,500 / 500
digits, 1,024 latents, 20 epochs of batch 128: 720 steps) and `minilm` (the
rows of `benchmarks.quality.minilm_activations`, scaled to mean squared norm 384;
3,072 latents, batch 256). Each run is a subprocess (the backend is chosen
before Keras is imported). Writes `benchmarks/figures/target_l0.json`.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import figures_dir, machine_info, machine_summary, write_json

# Each run is this module again, `python -m benchmarks.quality.target_l0 --child`,
# started from the repository root.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

TARGETS = (8, 16, 32, 64, 128)
SIZES = {"mnist": dict(latent_dim=1024, batch_size=128, epochs=20, lr=3e-3),
         "minilm": dict(latent_dim=3072, batch_size=256, epochs=8, lr=1e-3)}
FIXED = {"mnist": (0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0),
         "minilm": (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)}


def run_one(dataset, target, coefficient, seed):
    """In the child: one training run; returns its held-out figures."""
    import keras

    import gated_sae_layers as gsl
    from gated_sae_layers.evaluation import analysis
    from benchmarks.quality.pareto import load_dataset

    size = SIZES[dataset]
    keras.utils.set_random_seed(seed)
    x_train, x_test, _ = load_dataset(dataset, seed)
    model = gsl.build_gated_sae(x_train.shape[1], size["latent_dim"],
                                sparsity_coefficient=coefficient)
    model.initialize_decoder_bias(x_train)
    steps = size["epochs"] * int(np.ceil(len(x_train) / size["batch_size"]))
    model.compile(optimizer=keras.optimizers.Adam(
        gsl.WarmupStableDecay(size["lr"], max(steps // 20, 1), steps), beta_1=0.0),
        jit_compile=True)
    callbacks = [gsl.SparsityWarmup(max(steps // 10, 1))]
    if target is not None:
        callbacks.append(gsl.TargetL0(target))
    start = time.perf_counter()
    history = model.fit(x_train, epochs=size["epochs"], batch_size=size["batch_size"],
                        verbose=0, callbacks=callbacks)
    seconds = time.perf_counter() - start
    report = gsl.sparsity_report(model, x_test)
    return {
        "dataset": dataset, "backend": keras.backend.backend(), "target": target,
        "start_coefficient": coefficient, "steps": steps,
        "final_coefficient": float(keras.ops.convert_to_numpy(
            model.sparsity_penalties()[0].coefficient)),
        "coefficient_history": [round(float(v), 4) for v in
                                history.history.get("sparsity_coefficient", [])],
        "train_l0_history": [round(float(v), 2) for v in history.history["l0"]],
        "held_out_l0": float(report["l0_mean"]),
        "dead": int(report["dead"]),
        "fvu": float(analysis.fraction_of_variance_unexplained(model, x_test)),
        "seconds": seconds,
    }


def spawn(dataset, backend, target, coefficient, seed):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "benchmarks.quality.target_l0", "--child",
               json.dumps([dataset, target, coefficient, seed])]
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fixed_fvu_at(sweep, l0):
    """The fixed-coefficient FVU at `l0`, linear in log L0; None outside."""
    points = sorted((r["held_out_l0"], r["fvu"]) for r in sweep)
    for (l0_a, fvu_a), (l0_b, fvu_b) in zip(points, points[1:]):
        if l0_a <= l0 <= l0_b and l0_b > l0_a:
            t = (np.log(l0) - np.log(l0_a)) / (np.log(l0_b) - np.log(l0_a))
            return float(fvu_a + t * (fvu_b - fvu_a))
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "minilm"])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow"])
    parser.add_argument("--targets", nargs="+", type=int, default=list(TARGETS))
    parser.add_argument("--no-sweep", action="store_true",
                        help="skip the fixed-coefficient frontier")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(*json.loads(args.child))))
        return None

    rows, sweeps = [], {}
    for dataset in args.datasets:
        if not args.no_sweep:
            sweeps[dataset] = [spawn(dataset, "jax", None, c, args.seed)
                               for c in FIXED[dataset]]
            for r in sweeps[dataset]:
                print(f"fixed {dataset} c={r['start_coefficient']:<5} "
                      f"L0 {r['held_out_l0']:7.1f}  FVU {r['fvu']:.4f}", flush=True)
        for backend in args.backends:
            for target in args.targets:
                row = spawn(dataset, backend, target, 1.0, args.seed)
                fixed = fixed_fvu_at(sweeps.get(dataset, []), row["held_out_l0"])
                row["fvu_fixed_at_l0"] = fixed
                rows.append(row)
                print(f"{dataset:<7}{backend:<11}target {target:>4}  held-out L0 "
                      f"{row['held_out_l0']:7.1f} ({row['held_out_l0'] / target - 1:+.1%})"
                      f"  FVU {row['fvu']:.4f}"
                      + (f"  fixed-coefficient FVU there {fixed:.4f}" if fixed else "")
                      + f"  coefficient {row['final_coefficient']:.3g}"
                      f"  dead {row['dead']}  {row['seconds']:.0f} s", flush=True)

    print("\n| dataset | backend | target L0 | held-out L0 | error | FVU | "
          "fixed-coefficient FVU at that L0 | final coefficient | dead |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        fixed = r["fvu_fixed_at_l0"]
        print(f"| {r['dataset']} | {r['backend']} | {r['target']} | "
              f"{r['held_out_l0']:.1f} | {r['held_out_l0'] / r['target'] - 1:+.1%} | "
              f"{r['fvu']:.4f} | {'-' if fixed is None else f'{fixed:.4f}'} | "
              f"{r['final_coefficient']:.3g} | {r['dead']} |")
    write_json(figures_dir() / "target_l0.json",
               {"machine": machine_summary(machine_info()), "sizes": SIZES, "runs": rows,
                "fixed_sweeps": sweeps})
    return rows


if __name__ == "__main__":
    main()
