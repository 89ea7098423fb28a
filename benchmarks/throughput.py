"""Training throughput of a gated SAE: TensorFlow, TensorFlow + XLA and JAX.

Measures training samples/second of `gsl.build_gated_sae(512, 4096)` at
batch 1024 with the stock `model.fit`, for up to three configurations side
by side in one run:

    tf       KERAS_BACKEND=tensorflow, compile(jit_compile=False)
    tf-xla   KERAS_BACKEND=tensorflow, compile(jit_compile=True)
    jax      KERAS_BACKEND=jax (the train step is always jitted)

The Keras backend is fixed when `keras` is imported, so each configuration
runs in its own subprocess: this script re-invokes itself with the hidden
`--worker NAME` flag and `KERAS_BACKEND` set; the worker prints one JSON line
(prefixed by a marker) and the parent gathers the lines into a Markdown table.
A configuration that fails (exception, crash, timeout) is reported in the
table and the others still run.

Method, per configuration: random float32 data of `--steps` batches
(default 16 x 1024 = 16384 rows); one short warm-up `fit` (2 batches) so that
tracing/compilation is excluded; then `--repeats` timed calls of
`fit(x, epochs=--epochs, batch_size=1024, verbose=0)` with `time.perf_counter`
around each (plus a read-back of one variable so asynchronous devices have
finished); the best timing is reported, the median beside it.

Work per step is counted as 7 matmuls of batch x 512 x 4096 (2*B*512*4096
FLOPs each): 3 forward (encoder, decoder, frozen aux decoder) and 4 backward
(decoder weight and input gradients, aux-decoder input gradient - the frozen
decoder gets no weight gradient - and the encoder weight gradient). That is
a lower bound: the compiled gradient graph also holds an 8th matmul, the
encoder's input gradient, which the decoder bias `b_dec` needs (it enters
the encoder as `x - b_dec`). The 8-matmul figure is in the JSON output.

The reference peak is this machine's float32 GEMM rate: numpy matmul of
`--gemm-n` square matrices, best of `--gemm-reps` timed before the
configurations and as many after them (the best of both is used, since on a
shared machine the rate drifts over a run). Where a GPU is present
(nvidia-smi lists one) the GPU GEMM peak is measured as well, with
`jax.numpy.matmul` + `block_until_ready` (TensorFlow as a fallback), at the
default matmul precision (which may use TF32 on the GPU, as the SAE training
itself does) and at HIGHEST (true float32); a configuration that trained on
the GPU is compared with the default-precision GPU peak, one that trained on
the CPU with the numpy peak. The table names the peak used on each row.

Usage:

    python benchmarks/throughput.py                       # CPU default, ~3 min
    python benchmarks/throughput.py --configs tf,jax --repeats 2
    python benchmarks/throughput.py --device-info         # CPU/GPU summary only
    python benchmarks/throughput.py --steps 64 --epochs 10 --json gpu.json  # GPU

No thread environment variables are set: TensorFlow, XLA:CPU and OpenBLAS
all default to every core of the machine.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "GSAE_THROUGHPUT_JSON "
CONFIGS = {
    # name: (KERAS_BACKEND, jit_compile passed to compile)
    "tf": ("tensorflow", False),
    "tf-xla": ("tensorflow", True),
    "jax": ("jax", True),
}
FORWARD_MATMULS = 3
BACKWARD_MATMULS = 4          # lower bound; the compiled graph has 5
GRAPH_MATMULS = 8


# ---------------------------------------------------------------- machine
def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cpu_model():
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib():
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return None


def nvidia_gpus():
    """GPU names from `nvidia-smi -L` (no framework import); [] if none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.startswith("GPU")]


def device_info():
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpus = nvidia_gpus()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "gpu_present": bool(gpus),
        "gpus": gpus,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def print_device_info(info):
    mem = f"{info['memory_gib']:.1f} GiB" if info["memory_gib"] else "unknown"
    print(f"CPU: {info['cpu_model']}, {info['cpu_count']} logical CPUs "
          f"({info['cpu_usable']} usable), memory {mem}")
    if info["gpu_present"]:
        for gpu in info["gpus"]:
            print(f"GPU: {gpu}")
    else:
        print("GPU: none (nvidia-smi absent or lists no GPU)")


# ------------------------------------------------------------------- GEMM
def numpy_gemm_peak(n, reps):
    """Float32 GEMM GFLOP/s of numpy (its BLAS, all threads): best/median."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)                       # warm-up
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        rates.append(2.0 * n**3 / (time.perf_counter() - t0) / 1e9)
    return {"n": n, "reps": reps, "best_gflops": max(rates),
            "median_gflops": statistics.median(rates), "all_gflops": rates}


def numpy_sae_gemm(batch, input_dim, latent_dim, reps):
    """GFLOP/s of numpy on the SAE's own matmul shape (informational)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((batch, input_dim), dtype=np.float32)
    b = rng.standard_normal((input_dim, latent_dim), dtype=np.float32)
    np.matmul(a, b)
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b)
        rates.append(2.0 * batch * input_dim * latent_dim
                     / (time.perf_counter() - t0) / 1e9)
    return {"shape": [batch, input_dim, latent_dim], "reps": reps,
            "best_gflops": max(rates), "median_gflops": statistics.median(rates)}


def _time_inner(fn, sync, reps, inner):
    sync(fn())                                   # compile + warm-up
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            out = fn()
        sync(out)
        rates.append((time.perf_counter() - t0) / inner)
    return rates


def gpu_gemm_worker(args):
    """Worker: float32 GEMM peak on the GPU (JAX first, TensorFlow fallback)."""
    n, reps, inner = args.gpu_gemm_n, args.gemm_reps, 10
    flops = 2.0 * n**3
    result = {"worker": "gpu-gemm", "n": n, "reps": reps, "inner": inner}
    try:
        import jax
        import jax.numpy as jnp

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if gpus:
            key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
            a = jax.device_put(jax.random.normal(key_a, (n, n), jnp.float32), gpus[0])
            b = jax.device_put(jax.random.normal(key_b, (n, n), jnp.float32), gpus[0])
            for label, precision in (("default", None),
                                     ("highest", jax.lax.Precision.HIGHEST)):
                f = jax.jit(lambda x, y, p=precision: jnp.matmul(x, y, precision=p))
                times = _time_inner(lambda: f(a, b), lambda o: o.block_until_ready(),
                                    reps, inner)
                result[f"{label}_gflops"] = flops / min(times) / 1e9
            result.update(library=f"jax {jax.__version__}", device=str(gpus[0]))
            return result
        result["jax_note"] = f"JAX sees no GPU (backend {jax.default_backend()})"
    except Exception as error:  # noqa: BLE001 - fall back to TensorFlow
        result["jax_note"] = f"JAX GEMM failed: {type(error).__name__}: {error}"
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        raise RuntimeError("neither JAX nor TensorFlow sees a GPU; "
                           + result.get("jax_note", ""))
    with tf.device("/GPU:0"):
        a = tf.random.normal((n, n), dtype=tf.float32)
        b = tf.random.normal((n, n), dtype=tf.float32)
        f = tf.function(lambda x, y: tf.matmul(x, y))
        sync = lambda o: o[0, 0].numpy()  # noqa: E731
        tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
        result["default_gflops"] = flops / min(
            _time_inner(lambda: f(a, b), sync, reps, inner)) / 1e9
        tf.config.experimental.enable_tensor_float_32_execution(False)
        f = tf.function(lambda x, y: tf.matmul(x, y))
        result["highest_gflops"] = flops / min(
            _time_inner(lambda: f(a, b), sync, reps, inner)) / 1e9
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
    result.update(library=f"tensorflow {tf.__version__}", device="/GPU:0")
    return result


# -------------------------------------------------------------- SAE worker
def flops_per_step(batch, input_dim, latent_dim, matmuls):
    return matmuls * 2.0 * batch * input_dim * latent_dim


def sae_worker(args):
    """Worker: times `fit` of the gated SAE under the backend in KERAS_BACKEND."""
    backend, jit = CONFIGS[args.worker]
    if os.environ.get("KERAS_BACKEND") != backend:
        raise RuntimeError(f"worker {args.worker} needs KERAS_BACKEND={backend}, "
                           f"got {os.environ.get('KERAS_BACKEND')!r}")
    sys.path.insert(0, REPO_ROOT)
    import keras

    import gated_sae_layers as gsl

    result = {"worker": args.worker, "backend": keras.backend.backend(),
              "jit_compile": jit, "keras": keras.__version__}
    if backend == "tensorflow":
        import tensorflow as tf

        result["tensorflow"] = tf.__version__
        gpus = tf.config.list_physical_devices("GPU")
        result["device"] = "gpu" if gpus else "cpu"
        result["device_detail"] = ", ".join(d.name for d in gpus) or "CPU"
    else:
        import jax

        result["jax"] = jax.__version__
        result["device"] = jax.default_backend()
        result["device_detail"] = str(jax.devices()[0])

    keras.utils.set_random_seed(0)
    batch = args.batch_size
    x = np.random.default_rng(0).standard_normal(
        (args.steps * batch, args.input_dim), dtype=np.float32)
    model = gsl.build_gated_sae(input_dim=args.input_dim,
                                latent_dim=args.latent_dim,
                                sparsity_coefficient=1e-3)
    model.compile(optimizer=keras.optimizers.Adam(1e-4, beta_1=0.0),
                  jit_compile=jit)
    probe = model.decoder.bias   # read back after fit: waits for async devices

    t0 = time.perf_counter()
    model.fit(x[: min(2, args.steps) * batch], epochs=1, batch_size=batch,
              verbose=0)
    keras.ops.convert_to_numpy(probe)
    result["warmup_s"] = time.perf_counter() - t0

    times, history = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        history = model.fit(x, epochs=args.epochs, batch_size=batch, verbose=0)
        keras.ops.convert_to_numpy(probe)
        times.append(time.perf_counter() - t0)

    steps = args.steps * args.epochs
    best, median = min(times), statistics.median(times)
    result.update(
        steps_per_timing=steps,
        samples_per_timing=steps * batch,
        times_s=times,
        best_s=best,
        samples_per_s=steps * batch / best,
        median_samples_per_s=steps * batch / median,
        ms_per_step=1000.0 * best / steps,
        gflops_7mm=flops_per_step(batch, args.input_dim, args.latent_dim,
                                  FORWARD_MATMULS + BACKWARD_MATMULS)
        * steps / best / 1e9,
        gflops_8mm=flops_per_step(batch, args.input_dim, args.latent_dim,
                                  GRAPH_MATMULS) * steps / best / 1e9,
        final_loss=float(history.history["loss"][-1]),
    )
    return result


def run_worker(args):
    try:
        if args.worker == "gpu-gemm":
            result = gpu_gemm_worker(args)
        else:
            result = sae_worker(args)
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        result = {"worker": args.worker,
                  "error": f"{type(error).__name__}: {error}"[:500]}
    sys.stdout.flush()
    print(MARKER + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------ parent
def spawn(name, backend, args):
    """Runs this script as `--worker name` in a subprocess; returns its dict."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name,
           "--steps", str(args.steps), "--epochs", str(args.epochs),
           "--repeats", str(args.repeats), "--batch-size", str(args.batch_size),
           "--input-dim", str(args.input_dim), "--latent-dim", str(args.latent_dim),
           "--gemm-reps", str(args.gemm_reps), "--gpu-gemm-n", str(args.gpu_gemm_n)]
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # quieter logs, no effect on speed
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"worker": name, "error": f"timed out after {args.timeout} s"}
    wall = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER):])
            result["subprocess_wall_s"] = wall
            return result
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    return {"worker": name, "subprocess_wall_s": wall,
            "error": f"exit code {proc.returncode}, no result line; {tail}"[:500]}


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def markdown_table(results, peaks):
    head = ("| config | backend | jit | device | samples/s (best) | samples/s (median) "
            "| ms/step | GFLOP/s (7 matmuls) | % of GEMM peak | peak used |")
    rows = [head, "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        name = r["worker"]
        backend, jit = CONFIGS[name]
        if "error" in r:
            error = r["error"].replace("|", "/").replace("\n", " ")
            rows.append(f"| {name} | {backend} | {jit} | - | FAILED: {error} "
                        "| - | - | - | - | - |")
            continue
        on_gpu = r.get("device") in ("gpu", "cuda", "rocm")
        peak_label, peak = ("numpy CPU GEMM", peaks["cpu"]["best_gflops"])
        if on_gpu:
            if peaks.get("gpu") and "default_gflops" in peaks["gpu"]:
                peak_label, peak = ("GPU GEMM (default precision)",
                                    peaks["gpu"]["default_gflops"])
            else:
                peak_label, peak = ("none: GPU peak missing", None)
        frac = 100.0 * r["gflops_7mm"] / peak if peak else None
        r["peak_used"], r["peak_used_gflops"], r["fraction_of_peak"] = (
            peak_label, peak, None if frac is None else frac / 100.0)
        rows.append(
            f"| {name} | {backend} | {jit} | {r['device']} "
            f"| {r['samples_per_s']:,.0f} | {r['median_samples_per_s']:,.0f} "
            f"| {r['ms_per_step']:.1f} | {r['gflops_7mm']:,.1f} "
            f"| {fmt(frac, '.1f')}{'%' if frac is not None else ''} | {peak_label} |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16,
                        help="batches in the random data set = steps per epoch "
                             "(default 16, i.e. 16384 rows)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per timed fit (default 2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed fits per configuration; best is reported "
                             "(default 3)")
    parser.add_argument("--configs", default="tf,tf-xla,jax",
                        help="comma-separated subset of tf,tf-xla,jax")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--input-dim", type=int, default=512)
    parser.add_argument("--latent-dim", type=int, default=4096)
    parser.add_argument("--gemm-n", type=int, default=4096,
                        help="size of the numpy square GEMM (default 4096)")
    parser.add_argument("--gpu-gemm-n", type=int, default=8192,
                        help="size of the GPU square GEMM (default 8192)")
    parser.add_argument("--gemm-reps", type=int, default=5,
                        help="timed GEMM repetitions, best is the peak (default 5)")
    parser.add_argument("--timeout", type=int, default=900,
                        help="seconds allowed per worker subprocess (default 900)")
    parser.add_argument("--json", metavar="PATH",
                        help="also write all results to this JSON file")
    parser.add_argument("--device-info", action="store_true",
                        help="print CPU count, memory and GPU presence, then exit")
    parser.add_argument("--worker", choices=[*CONFIGS, "gpu-gemm"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        return run_worker(args)
    for flag in ("steps", "epochs", "repeats", "batch_size", "gemm_reps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        parser.error(f"--configs takes a subset of {','.join(CONFIGS)}; "
                     f"got {args.configs!r}")

    info = device_info()
    if args.device_info:
        print_device_info(info)
        return 0

    started = time.perf_counter()
    print(f"# Gated SAE training throughput ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})")
    print_device_info(info)
    step_gflop = flops_per_step(args.batch_size, args.input_dim, args.latent_dim,
                                FORWARD_MATMULS + BACKWARD_MATMULS) / 1e9
    print(f"Model {args.input_dim} -> {args.latent_dim}, batch {args.batch_size}; "
          f"{args.steps} batches x {args.epochs} epochs per timed fit, best of "
          f"{args.repeats}; {step_gflop:.2f} GFLOP/step counted (7 matmuls)")

    gemm_start = numpy_gemm_peak(args.gemm_n, args.gemm_reps)
    peaks = {"cpu": dict(gemm_start, start=gemm_start),
             "cpu_sae_shape": numpy_sae_gemm(args.batch_size, args.input_dim,
                                             args.latent_dim, args.gemm_reps * 4)}
    print(f"numpy float32 GEMM {args.gemm_n}^3 before the configs: best "
          f"{gemm_start['best_gflops']:.1f} GFLOP/s (median "
          f"{gemm_start['median_gflops']:.1f}, {args.gemm_reps} reps)")
    sae = peaks["cpu_sae_shape"]
    print(f"numpy float32 GEMM on the SAE shape {args.batch_size}x{args.input_dim}"
          f"x{args.latent_dim}: best {sae['best_gflops']:.1f} GFLOP/s "
          f"(median {sae['median_gflops']:.1f})")
    if info["gpu_present"]:
        gpu = spawn("gpu-gemm", "jax", args)
        peaks["gpu"] = gpu
        if "error" in gpu:
            print(f"GPU GEMM peak: FAILED: {gpu['error']}")
        else:
            print(f"GPU float32 GEMM {gpu['n']}^3 ({gpu['library']}, {gpu['device']}): "
                  f"default precision {gpu['default_gflops']:,.0f} GFLOP/s "
                  f"<- GPU peak; precision HIGHEST {gpu['highest_gflops']:,.0f} GFLOP/s")
    sys.stdout.flush()

    results = []
    for name in configs:
        backend, _ = CONFIGS[name]
        result = spawn(name, backend, args)
        results.append(result)
        status = result.get("error") or (
            f"{result['samples_per_s']:,.0f} samples/s on {result['device']}, "
            f"warm-up {result['warmup_s']:.1f} s")
        print(f"[{name}] {status} ({result.get('subprocess_wall_s', 0):.0f} s "
              "in subprocess)", file=sys.stderr, flush=True)

    # Measured again after the configs: on a shared or throttled machine the
    # rate drifts, and the best of both is the better estimate of the peak.
    gemm_end = numpy_gemm_peak(args.gemm_n, args.gemm_reps)
    peaks["cpu"] = {
        "n": args.gemm_n, "reps": 2 * args.gemm_reps,
        "best_gflops": max(gemm_start["best_gflops"], gemm_end["best_gflops"]),
        "median_gflops": statistics.median(
            gemm_start["all_gflops"] + gemm_end["all_gflops"]),
        "start": gemm_start, "end": gemm_end}
    print(f"numpy float32 GEMM {args.gemm_n}^3 after the configs: best "
          f"{gemm_end['best_gflops']:.1f} GFLOP/s (median "
          f"{gemm_end['median_gflops']:.1f}, {args.gemm_reps} reps)")
    print(f"CPU peak used = best of both: {peaks['cpu']['best_gflops']:.1f} GFLOP/s "
          f"(median of all {2 * args.gemm_reps} reps "
          f"{peaks['cpu']['median_gflops']:.1f})")
    print()
    print(markdown_table(results, peaks))
    print()
    print(f"GFLOP/s counts 7 matmuls of 2*{args.batch_size}*{args.input_dim}*"
          f"{args.latent_dim} FLOPs per step (a lower bound); the compiled "
          "graph has 8 (the encoder input gradient feeds b_dec), so the work "
          "done is 8/7 of the figure shown.")
    versions = {k: v for r in results for k, v in r.items()
                if k in ("keras", "tensorflow", "jax")}
    print("Versions: python " + info["python"] + ", numpy " + info["numpy"]
          + "".join(f", {k} {v}" for k, v in sorted(versions.items())))
    total = time.perf_counter() - started
    print(f"Total wall time {total:.0f} s")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "worker"},
                       "machine": info, "peaks": peaks, "results": results,
                       "versions": versions, "total_wall_s": total}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
