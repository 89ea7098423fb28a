"""The parent side of `python -m benchmarks.throughput`: a worker per group of configs.

The Keras backend is fixed when `keras` is imported, so every group of
configurations runs in a subprocess, `python -m benchmarks.throughput
--worker NAMES` from the repository root with `KERAS_BACKEND` set. The
worker prints one JSON line per configuration, prefixed by `MARKER`;
`spawn` gathers them, and turns a crash, a timeout or a missing line into an
`error` row so that the other configurations still run. `run_group` runs one group at one size within the `--time-budget`.
"""

import json
import os
import subprocess
import sys
import time

from benchmarks.throughput import reference_steps as ref
from benchmarks.throughput.configs import CONFIGS, size_tag

MARKER = "GSAE_THROUGHPUT_JSON "
# The worker is this benchmark's own entry point, started from the repository
# root (`python -m benchmarks.throughput --worker NAMES`), wherever the parent
# was started from.
MODULE = "benchmarks.throughput"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def public_args(args):
    """The command-line arguments, as recorded in the JSON results."""
    return {k: v for k, v in vars(args).items()
            if k not in ("worker", "config_list", "sizes")}


def _worker_command(names, args, size):
    cmd = [sys.executable, "-m", MODULE, "--worker", ",".join(names),
           "--steps", str(args.steps), "--epochs", str(args.epochs),
           "--repeats", str(args.repeats), "--min-time", str(args.min_time),
           "--batch-size", str(size["batch_size"]),
           "--input-dim", str(size["input_dim"]),
           "--latent-dim", str(size["latent_dim"]),
           "--gemm-reps", str(args.gemm_reps), "--gpu-gemm-n", str(args.gpu_gemm_n),
           "--architecture", args.architecture, "--k", str(args.k),
           "--gated-l0", str(args.gated_l0), "--sparse-cap", str(args.sparse_cap)]
    for flag in ("remove_parallel_gradient", "verify"):
        if getattr(args, flag):
            cmd.append("--" + flag.replace("_", "-"))
    for flag in ("profile", "torch_device"):
        if getattr(args, flag):
            cmd += ["--" + flag.replace("_", "-"), getattr(args, flag)]
    return cmd


def spawn(names, args, size, timeout=None):
    """Runs this script as `--worker names` in one subprocess; one dict per name."""
    config = CONFIGS.get(names[0])
    backend = config.backend if config else "jax"
    cmd = _worker_command(names, args, size)
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # quieter logs, no effect on speed
    timeout = timeout or args.timeout
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=timeout)
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout or ""
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
        stderr, code = (f"cut at the --time-budget after {timeout:.0f} s"
                        if timeout < args.timeout else
                        f"timed out after {timeout:.0f} s (--timeout)"), None
    wall = time.perf_counter() - t0
    if args.log_dir:
        with open(os.path.join(args.log_dir, "workers.log"), "a") as log:
            log.write(f"\n===== {' '.join(cmd[3:])} (exit {code}, {wall:.0f} s)\n")
            log.write(stdout[-20000:] + "\n----- stderr\n" + (stderr or "")[-20000:])
    found = {}
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER):])
            found[result["worker"]] = result
    results = []
    for name in names:
        if name in found:
            result = found[name]
        else:
            tail = " | ".join((stderr or stdout).strip().splitlines()[-3:])
            why = tail if code is None else f"exit code {code}, no result line; {tail}"
            result = {"worker": name, "error": why[:500]}
        result["subprocess_wall_s"] = wall
        results.append(result)
    return results


def run_group(group, size, args, left):
    """The rows of one group of configs at one size, annotated and announced.

    `left`: seconds left of `--time-budget` (None: no limit); with less than
    30 s the group is marked skipped. Prints one status line per config to
    stderr.
    """
    tag = size_tag(size)
    if left is not None and left < 30:
        results = [{"worker": n, "size": tag, "skipped": "time budget spent"}
                   for n in group]
    else:
        timeout = args.timeout if left is None else min(args.timeout, left - 10)
        results = spawn(group, args, size, timeout=timeout)
    for result in results:
        config = CONFIGS[result["worker"]]
        result.update(kind=config.kind, precision=config.precision,
                      what=config.what)
        result["memory_estimate"] = ref.memory_estimate(
            size["input_dim"], size["latent_dim"], size["batch_size"],
            config.precision)
        status = result.get("error") or result.get("skipped") or (
            f"{result['samples_per_s']:,.0f} samples/s on "
            f"{result['device']}, warm-up {result['warmup_s']:.1f} s")
        print(f"[{tag} {result['worker']}] {status} "
              f"({result.get('subprocess_wall_s', 0):.0f} s in subprocess)",
              file=sys.stderr, flush=True)
    return results
