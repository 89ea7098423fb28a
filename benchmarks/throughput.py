"""Training throughput of a gated SAE: the kit's stock `fit` against references.

Measures training samples/second of `gsl.build_gated_sae(D, M)` with the
stock `model.fit`, and of the strongest references of the same paper-exact
gated step, side by side in one run, then prints our ratio to each:

    ours (the kit's stock `model.fit(x, batch_size=B, epochs=E, verbose=0)`
    on a numpy array, as a user calls it; timed with a read-back of one
    variable at the end)
      tf                KERAS_BACKEND=tensorflow, compile(jit_compile=False)
      tf-xla            KERAS_BACKEND=tensorflow, compile(jit_compile=True)
      jax               KERAS_BACKEND=jax (the train step is always jitted)
      jax-bf16          jax under keras.config.set_dtype_policy("mixed_bfloat16")
    references (`reference_steps.py`: the same math, init and Adam, by hand,
    batches already on the device)
      hand-jax          one `jax.jit` step, Adam by hand, float32
      hand-jax-bf16     the same with bfloat16 matmul inputs (float32
                        parameters and Adam state), `block_until_ready`
      torch             PyTorch eager, float32 (TF32 matmuls on a GPU, as XLA)
      torch-bf16        PyTorch eager under torch.autocast(bfloat16)
      torch-compile     the loss `torch.compile`d (inductor; needs a C
      torch-compile-bf16  compiler on a CPU), fused Adam
    peers (`peers.py`, each optional: skipped, with the reason, if missing)
      saelens, saelens-bf16                  SAELens 6.x SAETrainer.step
      dictionary-learning, dictionary-learning-bf16   GatedSAETrainer.update
      gated-sae-tf, gated-sae-tf-xla         gated-sae-tf 0.1.1 `fit`

`--configs` takes names and the presets `kit`, `refs`, `peers`, `all`
(default) and `gpu` (everything but TensorFlow). Installing the optional
packages (none is a dependency of the kit; do not add them to
pyproject.toml):

    pip install torch==2.13.0+cpu   # a CPU wheel where one is at hand (plain
                                    # `pip install torch` pulls ~3 GB of CUDA)
    pip install sae-lens
    pip install --no-deps dictionary-learning einops
    pip install --no-deps gated-sae-tf

The Keras backend is fixed when `keras` is imported, so the configurations
run in subprocesses: this script re-invokes itself with the hidden
`--worker NAMES` flag and `KERAS_BACKEND` set; the worker prints one JSON line
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
beside it. Ratio columns: "ours / hand-jax" divides our samples/s by the
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

Usage:

    python benchmarks/throughput.py                     # CPU, everything, ~15 min
    python benchmarks/throughput.py --configs kit,refs  # without the peers
    python benchmarks/throughput.py --configs tf,jax --repeats 2
    python benchmarks/throughput.py --verify            # same-math check, ~1 min
    python benchmarks/throughput.py --device-info       # CPU/GPU summary only
    bash benchmarks/gpu_check.sh                        # H200: all GPU sizes

No thread environment variables are set: TensorFlow, XLA:CPU, PyTorch and
OpenBLAS all default to every core of the machine.
"""

import argparse
import collections
import gc
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)

import reference_steps as ref  # noqa: E402

MARKER = "GSAE_THROUGHPUT_JSON "
FLOAT32, BFLOAT16 = ref.PRECISIONS

Config = collections.namedtuple(
    "Config", "kind family backend precision what options")
CONFIGS = {
    # ours: the kit's stock model.fit
    "tf": Config("ours", "tf", "tensorflow", FLOAT32, "kit fit, TF graph",
                 {"jit": False}),
    "tf-xla": Config("ours", "tf-xla", "tensorflow", FLOAT32, "kit fit, TF + XLA",
                     {"jit": True}),
    "jax": Config("ours", "jax", "jax", FLOAT32, "kit fit, JAX", {"jit": True}),
    "jax-bf16": Config("ours", "jax-bf16", "jax", BFLOAT16,
                       "kit fit, JAX, mixed_bfloat16", {"jit": True}),
    # ours with the device-resident input path turned off (Keras's own loop)
    "jax-stock": Config("ours", "jax-stock", "jax", FLOAT32,
                        "kit fit, JAX, device_resident=False",
                        {"jit": True, "resident": False}),
    "jax-stock-bf16": Config("ours", "jax-stock-bf16", "jax", BFLOAT16,
                             "kit fit, JAX, mixed_bfloat16, device_resident=False",
                             {"jit": True, "resident": False}),
    # ours without fit: Keras's compiled train_step in a lax.scan, data on device
    "jax-scan": Config("ours", "jax-scan", "jax", FLOAT32,
                       "kit train_step in lax.scan (no fit)",
                       {"jit": True, "scan": True}),
    "jax-scan-bf16": Config("ours", "jax-scan-bf16", "jax", BFLOAT16,
                            "kit train_step in lax.scan, mixed_bfloat16",
                            {"jit": True, "scan": True}),
    # references: the same step by hand
    "hand-jax": Config("reference", "hand-jax", "jax", FLOAT32,
                       "jax.jit step by hand", {}),
    "hand-jax-bf16": Config("reference", "hand-jax", "jax", BFLOAT16,
                            "jax.jit step by hand, bf16 matmuls", {}),
    "torch": Config("reference", "torch", "jax", FLOAT32, "PyTorch eager",
                    {"compile": False}),
    "torch-bf16": Config("reference", "torch", "jax", BFLOAT16,
                         "PyTorch eager, autocast bf16", {"compile": False}),
    "torch-compile": Config("reference", "torch", "jax", FLOAT32,
                            "PyTorch torch.compile", {"compile": True}),
    "torch-compile-bf16": Config("reference", "torch", "jax", BFLOAT16,
                                 "PyTorch torch.compile, autocast bf16",
                                 {"compile": True}),
    # peers: other projects' gated SAEs, as shipped
    "saelens": Config("peer", "saelens", "jax", FLOAT32,
                      "SAELens SAETrainer.step", {}),
    "saelens-bf16": Config("peer", "saelens", "jax", BFLOAT16,
                           "SAELens SAETrainer.step, autocast", {}),
    "dictionary-learning": Config("peer", "dictionary-learning", "jax", FLOAT32,
                                  "dictionary_learning GatedSAETrainer", {}),
    "dictionary-learning-bf16": Config(
        "peer", "dictionary-learning", "jax", BFLOAT16,
        "dictionary_learning GatedSAETrainer, autocast", {}),
    "gated-sae-tf": Config("peer", "gated-sae-tf", "tensorflow", FLOAT32,
                           "gated-sae-tf fit", {"jit": "auto"}),
    "gated-sae-tf-xla": Config("peer", "gated-sae-tf", "tensorflow", FLOAT32,
                               "gated-sae-tf fit, XLA", {"jit": True}),
}
PRESETS = {
    "kit": ["tf", "tf-xla", "jax", "jax-bf16", "jax-stock", "jax-stock-bf16",
            "jax-scan", "jax-scan-bf16"],
    "refs": ["hand-jax", "hand-jax-bf16", "torch", "torch-bf16",
             "torch-compile", "torch-compile-bf16"],
    "peers": ["saelens", "saelens-bf16", "dictionary-learning",
              "dictionary-learning-bf16", "gated-sae-tf", "gated-sae-tf-xla"],
}
PRESETS["all"] = PRESETS["kit"] + PRESETS["refs"] + PRESETS["peers"]
PRESETS["gpu"] = [c for c in PRESETS["all"] if CONFIGS[c].backend != "tensorflow"]
SIZE_RE = re.compile(r"^(\d+)x(\d+)(?:@(\d+))?(?::(float32|bfloat16|bf16|f32))?$")
GIB = 2.0**30


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


# ---------------------------------------------------------------- workers
def kit_worker(name, args):
    """Times the kit's stock `fit` under the backend in KERAS_BACKEND."""
    config = CONFIGS[name]
    if os.environ.get("KERAS_BACKEND") != config.backend:
        raise RuntimeError(f"worker {name} needs KERAS_BACKEND={config.backend}, "
                           f"got {os.environ.get('KERAS_BACKEND')!r}")
    sys.path.insert(0, REPO_ROOT)
    import keras

    import gated_sae_layers as gsl

    jit = config.options["jit"]
    result = {"backend": keras.backend.backend(), "jit_compile": jit,
              "keras": keras.__version__}
    device, before = None, {}
    if config.backend == "tensorflow":
        import tensorflow as tf

        result["tensorflow"] = tf.__version__
        gpus = tf.config.list_physical_devices("GPU")
        result["device"] = "gpu" if gpus else "cpu"
        result["device_detail"] = ", ".join(d.name for d in gpus) or "CPU"
    else:
        import jax

        device = jax.devices()[0]
        before = ref._jax_memory(device)
        result["jax"] = jax.__version__
        result["device"] = jax.default_backend()
        result["device_detail"] = str(device)
    if config.precision == BFLOAT16:
        keras.config.set_dtype_policy("mixed_bfloat16")
    result["dtype_policy"] = keras.config.dtype_policy().name

    keras.utils.set_random_seed(0)
    batch = args.batch_size
    x = ref.random_batches(args.steps, batch, args.input_dim)
    model = gsl.build_gated_sae(input_dim=args.input_dim,
                                latent_dim=args.latent_dim,
                                sparsity_coefficient=ref.SPARSITY_COEFFICIENT,
                                remove_parallel_gradient=args.remove_parallel_gradient)
    model.compile(optimizer=keras.optimizers.Adam(
        ref.ADAM["learning_rate"], beta_1=ref.ADAM["beta_1"],
        beta_2=ref.ADAM["beta_2"], epsilon=ref.ADAM["epsilon"]),
        jit_compile=jit)
    probe = model.decoder.bias   # read back after fit: waits for async devices
    history = None

    def fit(epochs, rows=None):
        nonlocal history
        history = model.fit(x[:rows], epochs=epochs, batch_size=batch, verbose=0,
                            device_resident=config.options.get("resident", "auto"))
        keras.ops.convert_to_numpy(probe)

    if config.options.get("scan"):
        fit = _scanned_train_step(model, x, batch)

    t0 = time.perf_counter()
    fit(1, rows=min(2, args.steps) * batch)
    result["warmup_s"] = time.perf_counter() - t0
    epochs, times = ref.time_repeats(fit, args.epochs, args.repeats, args.min_time)
    result.update(ref.timing_summary(times, epochs * args.steps, batch,
                                     args.input_dim, args.latent_dim))
    if history is not None:
        result["final_loss"] = float(history.history["loss"][-1])
    if device is not None:
        result["peak_device_bytes"] = ref._peak_since(device, before)
        if args.profile:
            import jax

            where = profile_path(args, name)
            jax.profiler.start_trace(where)
            fit(1, rows=min(3, args.steps) * batch)
            jax.profiler.stop_trace()
            result["profile_dir"] = where
    return result


def _scanned_train_step(model, x, batch):
    """`run(epochs, rows=None)` over `lax.scan` of the model's own `train_step`.

    The kit's compiled step with none of `fit` around it: the batches sit on
    the device, one dispatch per epoch, no callbacks. The gap between this
    and the `jax` config is what `fit` costs; the gap between this and
    `hand-jax` is what Keras's step costs.
    """
    import jax

    model.fit(x[:batch], batch_size=batch, verbose=0)    # builds the optimizer
    state = model._get_jax_state(trainable_variables=True,
                                 non_trainable_variables=True,
                                 optimizer_variables=True, metrics_variables=True)
    batches = jax.device_put(x[: len(x) // batch * batch]).reshape(-1, batch, x.shape[1])

    def epoch(state, batches):
        def body(state, data):
            logs, state = model.train_step(state, (data,))
            return state, logs["loss"]
        return jax.lax.scan(body, state, batches)

    epoch = jax.jit(epoch, donate_argnums=0)
    holder = {"state": state}

    def run(epochs, rows=None):
        data = batches if rows is None else batches[: rows // batch]
        for _ in range(epochs):
            holder["state"], losses = epoch(holder["state"], data)
        jax.block_until_ready(holder["state"])

    return run


def profile_path(args, name):
    where = os.path.join(args.profile, size_tag(args), name)
    os.makedirs(where, exist_ok=True)
    return where


def size_tag(args):
    return f"{args.input_dim}x{args.latent_dim}@{args.batch_size}"


def run_config(name, args):
    config = CONFIGS[name]
    common = dict(input_dim=args.input_dim, latent_dim=args.latent_dim,
                  batch_size=args.batch_size, steps=args.steps,
                  epochs=args.epochs, repeats=args.repeats,
                  min_time=args.min_time)
    if config.kind == "ours":
        return kit_worker(name, args)
    if config.family == "hand-jax":
        return ref.time_jax_step(
            precision=config.precision,
            remove_parallel_gradient=args.remove_parallel_gradient,
            profile_dir=profile_path(args, name) if args.profile else None,
            **common)
    if config.family == "torch":
        if importlib.util.find_spec("torch") is None:
            raise PeerUnavailable("torch is not importable (pip install torch)")
        return ref.time_torch_step(
            precision=config.precision, compile=config.options["compile"],
            remove_parallel_gradient=args.remove_parallel_gradient,
            device=args.torch_device, **common)
    import peers

    if config.family == "saelens":
        return peers.time_saelens(precision=config.precision,
                                  device=args.torch_device, **common)
    if config.family == "dictionary-learning":
        return peers.time_dictionary_learning(precision=config.precision,
                                              device=args.torch_device, **common)
    if config.family == "gated-sae-tf":
        return peers.time_gated_sae_tf(jit_compile=config.options["jit"], **common)
    raise ValueError(f"no worker for config {name!r}")


class PeerUnavailable(Exception):
    pass


def _free_memory():
    gc.collect()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if "jax" in sys.modules:
        try:
            sys.modules["jax"].clear_caches()
        except Exception:  # noqa: BLE001
            pass


def run_worker(args):
    names = args.worker.split(",")
    for index, name in enumerate(names):
        result = {"worker": name, "size": size_tag(args)}
        if index:
            result["shared_process_with"] = names[:index]
        try:
            if args.verify:
                result.update(verify_config(name, args))
            elif name == "gpu-gemm":
                result.update(gpu_gemm_worker(args))
            else:
                result.update(run_config(name, args))
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            unavailable = (PeerUnavailable,)
            if "peers" in sys.modules:
                unavailable += (sys.modules["peers"].PeerUnavailable,)
            config = CONFIGS.get(name)
            if config is not None and config.kind == "peer":
                unavailable += (ImportError,)     # a peer that cannot load
            key = "skipped" if isinstance(error, unavailable) else "error"
            message = str(error) if key == "skipped" else (
                f"{type(error).__name__}: {error}")
            result[key] = message[:500]
        sys.stdout.flush()
        print(MARKER + json.dumps(result), flush=True)
        _free_memory()
    return 0


# ------------------------------------------------------------ --verify
VERIFY_CONFIGS = ("hand-jax", "jax", "tf", "tf-xla", "torch", "torch-compile")


def verify_config(name, args):
    """Trains 3 steps of a tiny SAE from `ref.init_params`; returns the weights."""
    params = ref.init_params(args.input_dim, args.latent_dim, seed=1)
    x = ref.random_batches(3, args.batch_size, args.input_dim, seed=2)
    config = CONFIGS[name]
    if config.family == "hand-jax":
        import jax

        step = jax.jit(ref.make_jax_step(config.precision,
                                         args.remove_parallel_gradient))
        zeros = {k: np.zeros_like(v) for k, v in params.items()}
        state = [params, zeros, dict(zeros), np.float32(0.0)]
        for i in range(3):
            *state, _ = step(*state, x[i * args.batch_size:(i + 1) * args.batch_size])
        out = {k: np.asarray(v) for k, v in state[0].items()}
    elif config.family == "torch":
        import torch

        sae = ref.make_torch_sae(args.input_dim, args.latent_dim, "cpu",
                                 config.precision, seed=1)
        optimizer, _ = ref.torch_adam(torch, sae.parameters())
        loss_fn = torch.compile(sae) if config.options["compile"] else sae
        for batch in torch.from_numpy(x).split(args.batch_size):
            optimizer.zero_grad()
            loss_fn(batch).backward()
            if args.remove_parallel_gradient:
                with torch.no_grad():
                    w, g = sae.W_dec, sae.W_dec.grad
                    g.sub_((g * w).sum(-1, keepdim=True)
                           / ((w * w).sum(-1, keepdim=True) + ref.PARALLEL_EPSILON) * w)
            optimizer.step()
            with torch.no_grad():
                sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True)
                               .clamp_min_(ref.NORM_EPSILON))
        out = {k: v.detach().numpy() for k, v in sae.named_parameters()}
    elif config.kind == "ours":
        sys.path.insert(0, REPO_ROOT)
        import keras

        import gated_sae_layers as gsl

        model = gsl.build_gated_sae(args.input_dim, args.latent_dim,
                                    ref.SPARSITY_COEFFICIENT,
                                    remove_parallel_gradient=args.remove_parallel_gradient)
        encoder, decoder = model.encoder, model.decoder
        variables = {"W_gate": encoder.gate_kernel, "b_gate": encoder.gate_bias,
                     "r_mag": encoder.magnitude_log_scale,
                     "b_mag": encoder.magnitude_bias, "W_dec": decoder.kernel,
                     "b_dec": decoder.bias}
        for key, variable in variables.items():
            variable.assign(params[key])
        model.compile(optimizer=keras.optimizers.Adam(
            ref.ADAM["learning_rate"], beta_1=ref.ADAM["beta_1"],
            beta_2=ref.ADAM["beta_2"], epsilon=ref.ADAM["epsilon"]),
            jit_compile=config.options["jit"])
        model.fit(x, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
        out = {k: keras.ops.convert_to_numpy(v) for k, v in variables.items()}
    else:
        raise ValueError(f"--verify covers {', '.join(VERIFY_CONFIGS)}; got {name!r}")
    moved = {k: float(np.max(np.abs(out[k] - params[k]))) for k in params}
    return {"weights": {k: v.tolist() for k, v in out.items()},
            "max_update": moved}


def verify_main(args):
    configs = [c for c in args.config_list if c in VERIFY_CONFIGS] or list(VERIFY_CONFIGS)
    if "hand-jax" not in configs:
        configs.insert(0, "hand-jax")
    print(f"# Same-math check: 3 Adam steps of a {args.input_dim} -> "
          f"{args.latent_dim} gated SAE, batch {args.batch_size}, float32, "
          f"remove_parallel_gradient={args.remove_parallel_gradient}, from the "
          "same weights and batches")
    results = {}
    for name in configs:
        results[name] = spawn([name], args, dict(input_dim=args.input_dim,
                                                 latent_dim=args.latent_dim,
                                                 batch_size=args.batch_size))[0]
    base = results["hand-jax"]
    if "error" in base or "skipped" in base:
        print(f"hand-jax failed: {base.get('error') or base.get('skipped')}")
        return 1
    keys = list(base["weights"])
    print("\nLargest |w - w_hand-jax| after 3 steps (an Adam step moves a weight "
          f"by up to lr = {ref.ADAM['learning_rate']:g}):\n")
    print("| config | " + " | ".join(keys) + " | verdict |")
    print("|---|" + "---:|" * len(keys) + "---|")
    print("| hand-jax (moved by) | " + " | ".join(
        f"{base['max_update'][k]:.2e}" for k in keys) + " | reference |")
    status = 0
    for name, r in results.items():
        if name == "hand-jax":
            continue
        if "error" in r or "skipped" in r:
            print(f"| {name} | " + " | ".join("-" for _ in keys)
                  + f" | {'skipped' if 'skipped' in r else 'FAILED'}: "
                  f"{(r.get('error') or r.get('skipped'))[:120]} |")
            continue
        diffs = {k: float(np.max(np.abs(np.asarray(r["weights"][k])
                                        - np.asarray(base["weights"][k]))))
                 for k in keys}
        # Same math: differences far below one Adam step (1e-4). PyTorch's
        # Adam puts epsilon after the bias correction, so allow a little more.
        ok = max(diffs.values()) < 0.1 * ref.ADAM["learning_rate"]
        status |= not ok
        print(f"| {name} | " + " | ".join(f"{diffs[k]:.1e}" for k in keys)
              + f" | {'same math' if ok else 'DIFFERS'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"verify": results, "args": public_args(args)}, f)
    return status


# ------------------------------------------------------------------ parent
def public_args(args):
    return {k: v for k, v in vars(args).items()
            if k not in ("worker", "config_list", "sizes")}


def spawn(names, args, size, timeout=None):
    """Runs this script as `--worker names` in one subprocess; one dict per name."""
    config = CONFIGS.get(names[0])
    backend = config.backend if config else "jax"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", ",".join(names),
           "--steps", str(args.steps), "--epochs", str(args.epochs),
           "--repeats", str(args.repeats), "--min-time", str(args.min_time),
           "--batch-size", str(size["batch_size"]),
           "--input-dim", str(size["input_dim"]),
           "--latent-dim", str(size["latent_dim"]),
           "--gemm-reps", str(args.gemm_reps), "--gpu-gemm-n", str(args.gpu_gemm_n)]
    for flag in ("remove_parallel_gradient", "verify"):
        if getattr(args, flag):
            cmd.append("--" + flag.replace("_", "-"))
    for flag in ("profile", "torch_device"):
        if getattr(args, flag):
            cmd += ["--" + flag.replace("_", "-"), getattr(args, flag)]
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # quieter logs, no effect on speed
    timeout = timeout or args.timeout
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=timeout)
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
            log.write(f"\n===== {' '.join(cmd[2:])} (exit {code}, {wall:.0f} s)\n")
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


def parse_sizes(args, parser):
    specs = args.size.split(",") if args.size else [
        f"{args.input_dim}x{args.latent_dim}"]
    sizes = []
    for spec in specs:
        match = SIZE_RE.match(spec.strip())
        if not match:
            parser.error("--size takes DxM, DxM@B or DxM@B:PRECISION (PRECISION "
                         f"float32 or bfloat16), comma-separated. Received: {spec!r}")
        d, m, b, precision = match.groups()
        precision = {"bf16": BFLOAT16, "f32": FLOAT32}.get(precision, precision)
        sizes.append({"input_dim": int(d), "latent_dim": int(m),
                      "batch_size": int(b) if b else args.batch_size,
                      "precision": precision})
    return sizes


def parse_configs(text, parser):
    names = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        expanded = PRESETS.get(item, [item])
        for name in expanded:
            if name not in CONFIGS:
                parser.error(f"--configs takes names from {', '.join(CONFIGS)} and "
                             f"presets {', '.join(PRESETS)}. Received: {item!r}")
            if name not in names:
                names.append(name)
    if not names:
        parser.error(f"--configs is empty. Received: {text!r}")
    return names


def process_groups(names, share):
    """Consecutive runs of configs that may share one worker process."""
    groups = []
    for name in names:
        config = CONFIGS[name]
        shareable = share and config.kind != "ours"
        if (shareable and groups and CONFIGS[groups[-1][0]].kind != "ours"
                and CONFIGS[groups[-1][0]].family == config.family):
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


def fmt(value, spec, suffix=""):
    return "-" if value is None else format(value, spec) + suffix


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, scale in (("GiB", GIB), ("MiB", 2.0**20), ("KiB", 2.0**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


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


def ok(result):
    return result is not None and "samples_per_s" in result


def add_ratios(results):
    """Fills `ours_over_*` in the rows of ours; returns the ratio matrix."""
    by_name = {r["worker"]: r for r in results}
    matrix = {}
    for r in results:
        config = CONFIGS[r["worker"]]
        if config.kind != "ours" or not ok(r):
            continue
        same = [n for n, x in by_name.items()
                if CONFIGS[n].kind != "ours" and CONFIGS[n].precision == config.precision]
        row = {n: r["samples_per_s"] / by_name[n]["samples_per_s"]
               for n in same if ok(by_name[n])}
        matrix[r["worker"]] = row
        hand = "hand-jax" if config.precision == FLOAT32 else "hand-jax-bf16"
        r["ours_over_hand_jax"] = row.get(hand)
        torches = [n for n in same if CONFIGS[n].family == "torch" and n in row]
        if torches:
            best = min(torches, key=lambda n: row[n])    # the faster torch step
            r["ours_over_torch"], r["torch_compared"] = row[best], best
    return matrix


def results_table(results, peaks):
    head = ("| config | implementation | precision | device | samples/s (best) "
            "| samples/s (median) | ms/step | GFLOP/s (7 mm) | % of peak "
            "| peak device memory (estimate) | ours / hand-jax | ours / torch |")
    rows = [head, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        name = r["worker"]
        config = CONFIGS[name]
        if not ok(r):
            status = ("skipped: " + r["skipped"]) if "skipped" in r else (
                "FAILED: " + r.get("error", "no result"))
            status = status.replace("|", "/").replace("\n", " ")
            rows.append(f"| {name} | {config.what} | {config.precision} | - "
                        f"| {status} | | | | | | | |")
            continue
        label, peak = peak_for(r, peaks)
        frac = 100.0 * r["gflops_7mm"] / peak if peak else None
        r["peak_used"], r["peak_used_gflops"] = label, peak
        r["fraction_of_peak"] = None if frac is None else frac / 100.0
        estimate = r.get("memory_estimate", {}).get("total")
        memory = f"{fmt_bytes(r.get('peak_device_bytes'))} ({fmt_bytes(estimate)})"
        torch_ratio = r.get("ours_over_torch")
        rows.append(
            f"| {name} | {config.what} | {config.precision} | {r['device']} "
            f"| {r['samples_per_s']:,.0f} | {r['median_samples_per_s']:,.0f} "
            f"| {r['ms_per_step']:.2f} | {r['gflops_7mm']:,.1f} "
            f"| {fmt(frac, '.1f', '%')} | {memory} "
            f"| {fmt(r.get('ours_over_hand_jax'), '.2f')} "
            f"| {fmt(torch_ratio, '.2f')}"
            f"{' (' + r['torch_compared'] + ')' if torch_ratio else ''} |")
    return "\n".join(rows)


def ratio_table(matrix):
    refs = []
    for row in matrix.values():
        refs += [n for n in row if n not in refs]
    if not matrix or not refs:
        return ""
    refs.sort(key=list(CONFIGS).index)
    lines = ["| ours \\ reference | " + " | ".join(refs) + " |",
             "|---|" + "---:|" * len(refs)]
    for ours, row in matrix.items():
        lines.append(f"| {ours} ({CONFIGS[ours].precision}) | "
                     + " | ".join(fmt(row.get(n), ".2f") for n in refs) + " |")
    return "\n".join(lines)


def memory_table(results):
    rows = [r for r in results if ok(r) and (r.get("peak_device_bytes")
                                             or r.get("xla_memory"))]
    if not rows:
        return ""
    lines = ["| config | measured peak | estimate | weights | Adam | "
             "gradients | activations | XLA step: arguments + temporaries |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        e = r["memory_estimate"]
        xla = r.get("xla_memory") or {}
        xla_total = (xla.get("argument_size_in_bytes", 0)
                     + xla.get("temp_size_in_bytes", 0)) if xla else None
        lines.append(
            f"| {r['worker']} | {fmt_bytes(r.get('peak_device_bytes'))} "
            + "".join(f"| {fmt_bytes(e[k])} " for k in (
                "total", "weights", "adam", "gradients", "activations"))
            + f"| {fmt_bytes(xla_total)} |")
    return "\n".join(lines)


def write_json(path, payload):
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
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
    parser.add_argument("--min-time", type=float, default=0.0,
                        help="scale the passes up until one timing lasts at least "
                             "this many seconds (default 0: off)")
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
    args = parser.parse_args(argv)

    if args.worker:
        return run_worker(args)
    for flag in ("steps", "epochs", "repeats", "batch_size", "gemm_reps"):
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

    info = device_info()
    if args.device_info:
        print_device_info(info)
        return 0
    if args.verify:
        size = args.sizes[0]
        args.input_dim, args.latent_dim, args.batch_size = (
            size["input_dim"], size["latent_dim"], size["batch_size"])
        return verify_main(args)

    started = time.perf_counter()

    def remaining():
        if args.time_budget <= 0:
            return None
        return args.time_budget - (time.perf_counter() - started)

    print(f"# Gated SAE training throughput ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})")
    print_device_info(info)
    print(f"Configs: {', '.join(args.config_list)}; {args.steps} batches x "
          f"{args.epochs} epochs per timing"
          + (f" (scaled to >= {args.min_time:g} s)" if args.min_time else "")
          + f", best of {args.repeats}; Adam(lr={ref.ADAM['learning_rate']:g}, "
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
        tag = f"{size['input_dim']}x{size['latent_dim']}@{size['batch_size']}"
        entry = {"size": tag, **size, "results": []}
        payload["sizes"].append(entry)
        for group in process_groups(names, args.share):
            left = remaining()
            if left is not None and left < 30:
                results = [{"worker": n, "size": tag,
                            "skipped": "time budget spent"} for n in group]
            else:
                timeout = args.timeout if left is None else min(args.timeout,
                                                                left - 10)
                results = spawn(group, args, size, timeout=timeout)
            for result in results:
                config = CONFIGS[result["worker"]]
                result.update(kind=config.kind, precision=config.precision,
                              what=config.what)
                result["memory_estimate"] = ref.memory_estimate(
                    size["input_dim"], size["latent_dim"], size["batch_size"],
                    config.precision)
                entry["results"].append(result)
                status = result.get("error") or result.get("skipped") or (
                    f"{result['samples_per_s']:,.0f} samples/s on "
                    f"{result['device']}, warm-up {result['warmup_s']:.1f} s")
                print(f"[{tag} {result['worker']}] {status} "
                      f"({result.get('subprocess_wall_s', 0):.0f} s in subprocess)",
                      file=sys.stderr, flush=True)
            entry["ratios"] = add_ratios(entry["results"])
            write_json(args.json, payload)

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
          f"{gemm_end['best_gflops']:.1f} GFLOP/s; CPU peak used = best of both: "
          f"{peaks['cpu']['best_gflops']:.1f} GFLOP/s")

    for entry in payload["sizes"]:
        step_gflop = ref.flops_per_step(
            entry["batch_size"], entry["input_dim"], entry["latent_dim"],
            ref.FORWARD_MATMULS + ref.BACKWARD_MATMULS) / 1e9
        print(f"\n## {entry['input_dim']} -> {entry['latent_dim']}, batch "
              f"{entry['batch_size']} ({step_gflop:,.2f} GFLOP/step counted, "
              "7 matmuls)\n")
        print(results_table(entry["results"], peaks))
        ratios = ratio_table(entry["ratios"])
        if ratios:
            print("\nOur stock fit / each reference at the same precision "
                  "(samples/s ratio; > 1: ours is faster):\n")
            print(ratios)
        memory = memory_table(entry["results"])
        if memory:
            print("\nDevice memory, measured peak vs estimate (float32 weights, "
                  "Adam moments, gradients, ~8 batch x M activations):\n")
            print(memory)
    print()
    print("GFLOP/s counts 7 matmuls of 2*B*D*M FLOPs per step (a lower bound); "
          "the compiled graph has 8 (the encoder input gradient feeds b_dec). "
          "% of peak: float32 rows against the float32 GEMM peak (TF32 on a "
          "GPU), bfloat16 rows against the bfloat16 GEMM peak on a GPU and "
          "the float32 numpy peak on a CPU.")
    versions = {}
    for entry in payload["sizes"]:
        for r in entry["results"]:
            for key in ("keras", "tensorflow", "jax", "library"):
                if key in r and key != "library":
                    versions[key] = r[key]
            if "library" in r:
                versions[r["worker"]] = r["library"]
    print("Versions: python " + info["python"] + ", numpy " + info["numpy"]
          + "".join(f"; {k}: {v}" for k, v in sorted(versions.items())))
    total = time.perf_counter() - started
    print(f"Total wall time {total:.0f} s")
    payload.update(versions=versions, total_wall_s=total)
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
