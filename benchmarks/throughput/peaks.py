"""The GEMM peaks `python -m benchmarks.throughput` compares each row with.

* CPU: numpy float32 matmul of `--gemm-n` square matrices (its BLAS, all
  threads), best of `--gemm-reps`, before and after the configurations;
  `both_cpu_peaks` keeps the best of both.
* GPU (a worker process, `gpu_gemm_worker`): `jax.numpy.matmul` +
  `block_until_ready` at the default float32 precision (TF32 on Hopper),
  at HIGHEST and in bfloat16; TensorFlow where JAX sees no GPU.

`peak_for(row, peaks)` picks the peak of a row's device and precision.
"""

import statistics
import time

import numpy as np

from benchmarks.throughput.configs import BFLOAT16, FLOAT32


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


def both_cpu_peaks(start, end):
    """The CPU peak of a run: the better of the GEMMs before and after it.

    On a shared or throttled machine the rate drifts, and the best of both
    is the better estimate of the peak.
    """
    return {"n": start["n"], "reps": start["reps"] + end["reps"],
            "best_gflops": max(start["best_gflops"], end["best_gflops"]),
            "median_gflops": statistics.median(
                start["all_gflops"] + end["all_gflops"]),
            "start": start, "end": end}


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
    result = {"n": n, "reps": reps, "inner": inner}
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
            a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
            f = jax.jit(jnp.matmul)
            times = _time_inner(lambda: f(a16, b16), lambda o: o.block_until_ready(),
                                reps, inner)
            result["bf16_gflops"] = flops / min(times) / 1e9
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


def peak_for(result, peaks):
    """(label, GFLOP/s) of the peak a row is compared with."""
    on_gpu = result.get("device") in ("gpu", "cuda", "rocm")
    if not on_gpu:
        return "numpy CPU GEMM (float32)", peaks["cpu"]["best_gflops"]
    gpu = peaks.get("gpu") or {}
    if result.get("precision") == BFLOAT16 and "bf16_gflops" in gpu:
        return "GPU GEMM bfloat16", gpu["bf16_gflops"]
    if result.get("precision") == FLOAT32 and "default_gflops" in gpu:
        return "GPU GEMM float32 (default precision)", gpu["default_gflops"]
    return "none: GPU peak missing", None
