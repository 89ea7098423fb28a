"""The worker side of `python -m benchmarks.throughput`: times configs in this process.

`python -m benchmarks.throughput --worker NAMES` lands in `run_worker`, which
runs each configuration of `NAMES` in turn (`run_config`: the kit's `fit`
via `kit_worker`, a reference step of `reference_steps`, a peer of `peers`
or the GPU GEMM peak; with `--verify`, `verify_config`) and prints its
result as one JSON line after `MARKER`. An exception becomes an `error`
row; a peer or reference that is not installed becomes a `skipped` row.
"""

import gc
import importlib.util
import json
import os
import sys
import time

from benchmarks.throughput import reference_steps as ref
from benchmarks.throughput.configs import BFLOAT16, CONFIGS, size_tag
from benchmarks.throughput.devices import jax_memory, jax_peak_since, tensorflow_device
from benchmarks.throughput.parent import MARKER
from benchmarks.throughput.peaks import gpu_gemm_worker


class PeerUnavailable(Exception):
    pass


def kit_worker(name, args):
    """Times the kit's stock `fit` under the backend in KERAS_BACKEND."""
    config = CONFIGS[name]
    if os.environ.get("KERAS_BACKEND") != config.backend:
        raise RuntimeError(f"worker {name} needs KERAS_BACKEND={config.backend}, "
                           f"got {os.environ.get('KERAS_BACKEND')!r}")
    import keras

    jit = config.options["jit"]
    result = {"backend": keras.backend.backend(), "jit_compile": jit,
              "keras": keras.__version__}
    device, before = None, {}
    if config.backend == "tensorflow":
        import tensorflow as tf

        result["tensorflow"] = tf.__version__
        result.update(tensorflow_device())
    else:
        import jax

        device = jax.devices()[0]
        before = jax_memory(device)
        result["jax"] = jax.__version__
        result["device"] = jax.default_backend()
        result["device_detail"] = str(device)
    if config.precision == BFLOAT16:
        keras.config.set_dtype_policy("mixed_bfloat16")
    result["dtype_policy"] = keras.config.dtype_policy().name

    keras.utils.set_random_seed(0)
    batch = args.batch_size
    x = ref.random_batches(args.steps, batch, args.input_dim)
    model = build_kit_sae(args, jit, sparse=config.options.get("sparse", False),
                          sparse_kernels=config.options.get("kernels", "auto"))
    result["architecture"] = args.architecture
    result["sparse_path"] = model.sparse_path_reason if model.sparse_plan else "dense"
    probe = model.decoder.bias   # read back after fit: waits for async devices
    history = None

    def stock_fit(epochs, rows=None):
        nonlocal history
        history = model.fit(x[:rows], epochs=epochs, batch_size=batch, verbose=0,
                            device_resident=config.options.get("resident", "auto"))
        keras.ops.convert_to_numpy(probe)

    fit = (_scanned_train_step(model, x, batch) if config.options.get("scan")
           else stock_fit)

    t0 = time.perf_counter()
    fit(1, rows=min(2, args.steps) * batch)
    result["warmup_s"] = time.perf_counter() - t0
    epochs, times = ref.time_repeats(fit, args.epochs, args.repeats, args.min_time)
    result.update(ref.timing_summary(times, epochs * args.steps, batch,
                                     args.input_dim, args.latent_dim))
    if history is not None:
        result["final_loss"] = float(history.history["loss"][-1])
    if device is not None:
        result["peak_device_bytes"] = jax_peak_since(device, before)
        if args.profile:
            import jax

            where = profile_path(args, name)
            jax.profiler.start_trace(where)
            fit(1, rows=min(3, args.steps) * batch)
            jax.profiler.stop_trace()
            result["profile_dir"] = where
    return result


def build_kit_sae(args, jit_compile, sparse=False, sparse_kernels="auto"):
    """The kit's SAE of `--architecture` at the worker's size, compiled with the
    reference steps' Adam and sparsity coefficient, on the dense step or
    (`sparse=True`) the sparse path with `sparse_kernels`.

    `gated`: `gsl.build_gated_sae`; with `--gated-l0 L` its gate bias is set
    so that each latent fires on about `L / latent_dim` of the random rows
    (`gate_bias_for_l0`), the support a trained model has at that L0.
    `topk`: `gsl.build_topk_sae(k=--k)` with its default AuxK term.
    """
    import keras

    import gated_sae_layers as gsl

    if args.architecture == "topk":
        model = gsl.build_topk_sae(args.input_dim, args.latent_dim, k=args.k)
    else:
        model = gsl.build_gated_sae(
            input_dim=args.input_dim, latent_dim=args.latent_dim,
            sparsity_coefficient=ref.SPARSITY_COEFFICIENT,
            remove_parallel_gradient=args.remove_parallel_gradient)
        if args.gated_l0:
            model.encoder.gate_bias.assign(gate_bias_for_l0(model, args))
    model.compile(optimizer=keras.optimizers.Adam(
        ref.ADAM["learning_rate"], beta_1=ref.ADAM["beta_1"],
        beta_2=ref.ADAM["beta_2"], epsilon=ref.ADAM["epsilon"]),
        jit_compile=jit_compile, sparse=sparse,
        sparse_cap=args.sparse_cap or None, sparse_kernels=sparse_kernels)
    return model


def gate_bias_for_l0(model, args):
    """`b_gate` at which each latent fires on `--gated-l0 / latent_dim` of the rows.

    The benchmark's rows are standard normal and `W_gate` is
    `0.1 W_dec^T` with unit rows, so every gate pre-activation is
    `N(0, 0.01)`: the bias is the matching normal quantile.
    """
    from statistics import NormalDist

    import numpy as np

    fraction = args.gated_l0 / args.latent_dim
    scale = float(np.std(np.asarray(ref.random_batches(1, 4096, args.input_dim))
                         @ np.asarray(model.encoder.gate_kernel)[:, :256]))
    return np.full((args.latent_dim,), -NormalDist().inv_cdf(1 - fraction) * scale,
                   "float32")


def _scanned_train_step(model, x, batch):
    """`run(epochs, rows=None)` over `lax.scan` of the model's own `train_step`.

    The kit's compiled step with none of `fit` around it: the batches sit on
    the device, one dispatch per epoch, no callbacks. The gap between this
    and the `jax` config is what `fit` costs; the gap between this and
    `hand-jax` is what Keras's step costs.
    """
    import jax

    model.fit(x[:batch], batch_size=batch, verbose=0)    # builds the optimizer
    state = tuple([v.value for v in variables] for variables in (
        model.trainable_variables, model.non_trainable_variables,
        model.optimizer.variables, model.metrics_variables))
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
    where = os.path.join(args.profile, size_tag(vars(args)), name)
    os.makedirs(where, exist_ok=True)
    return where


def run_config(name, args):
    """Times one configuration (or, for `gpu-gemm`, the GPU GEMM peak)."""
    if name == "gpu-gemm":
        return gpu_gemm_worker(args)
    config = CONFIGS[name]
    common = dict(input_dim=args.input_dim, latent_dim=args.latent_dim,
                  batch_size=args.batch_size, steps=args.steps,
                  epochs=args.epochs, repeats=args.repeats,
                  min_time=args.min_time)
    if config.kind == "ours":
        return kit_worker(name, args)
    if config.kind == "reference" and args.architecture != "gated":
        raise PeerUnavailable("the hand-written references time the gated SAE")
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
    from benchmarks.throughput import peers
    from benchmarks.throughput.configs import ARCHITECTURE_ONLY

    only = ARCHITECTURE_ONLY.get(config.family)
    if only is not None and only != args.architecture:
        raise PeerUnavailable(f"{config.family} times the {only} SAE "
                              f"(--architecture {only})")
    if config.family == "sparsify":
        return peers.time_sparsify(k=args.k, device=args.torch_device, **common)
    if config.family == "saelens-topk":
        return peers.time_saelens_topk(k=args.k, device=args.torch_device, **common)
    if config.family == "saelens":
        return peers.time_saelens(precision=config.precision,
                                  device=args.torch_device, **common)
    if config.family == "dictionary-learning":
        return peers.time_dictionary_learning(precision=config.precision,
                                              device=args.torch_device, **common)
    if config.family == "gated-sae-tf":
        return peers.time_gated_sae_tf(jit_compile=config.options["jit"], **common)
    raise ValueError(f"no worker for config {name!r}")


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


def run_worker(args, run=run_config):
    """Runs `run(name, args)` for each name of `--worker`; prints each result."""
    names = args.worker.split(",")
    for index, name in enumerate(names):
        result = {"worker": name, "size": size_tag(vars(args))}
        if index:
            result["shared_process_with"] = names[:index]
        try:
            result.update(run(name, args))
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            unavailable = (PeerUnavailable,)
            if "benchmarks.throughput.peers" in sys.modules:
                unavailable += (sys.modules["benchmarks.throughput.peers"].PeerUnavailable,)
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
