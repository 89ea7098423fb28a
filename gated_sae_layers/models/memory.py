"""`train_step_memory`: the device memory one training dispatch needs, from XLA."""

import keras

from gated_sae_layers._validation import check_positive_int


def shapes_only_model(build, optimizer, **compile_kwargs):
    """A compiled model with the shapes of `build()` and no memory behind its variables.

    For `train_step_memory` at sizes that do not fit in this machine's
    memory (a 2304 -> 1,048,576 SAE holds 19 GiB of float32 weights before
    Adam's 39 GiB): `build()` runs inside a JAX trace, so every variable,
    the tied initialization and Adam's slots included, holds an abstract
    value. Such a model can only be lowered (`train_step_memory`); never
    call, fit or save it.

    Args:
        build: a function of no arguments returning an uncompiled
            `SparseAutoencoder`, e.g. `lambda: gsl.build_topk_sae(2304, 2**20, k=64)`.
        optimizer: the optimizer, created outside (its step counter needs a
            value).
        **compile_kwargs: passed to `compile` (`sparse=...`).

    Returns:
        The compiled model, its optimizer built.

    Example (JAX backend):

    ```python
    model = gsl.shapes_only_model(lambda: gsl.build_topk_sae(2304, 2**20, k=64),
                                  keras.optimizers.Adam(1e-4), sparse=True)
    gsl.train_step_memory(model, batch_size=4096)["peak_bytes"] / 2**30
    ```
    """
    import jax

    if keras.backend.backend() != "jax":
        raise ValueError(
            "`shapes_only_model` traces with JAX: set KERAS_BACKEND=jax. Received: "
            f"backend={keras.backend.backend()!r}")
    built = []

    def trace():
        with keras.StatelessScope():
            model = build()
            model.compile(optimizer, **compile_kwargs)
            model.optimizer.build(model.trainable_variables)
            built.append(model)
        return 0

    jax.eval_shape(trace)
    return built[0]


def train_step_memory(model, batch_size, chunk_rows=None):
    """XLA's account of the device memory of `model`'s compiled training loop.

    Compiles, without running it, the loop `SparseAutoencoder.fit` runs on
    JAX (`device_resident=True`) for batches of `batch_size` rows, and
    returns XLA's buffer assignment in bytes:

    ```
    peak = arguments + outputs - aliased + temporaries
    ```

    `arguments` are the weights, optimizer slots, metric state and the data
    chunk; `aliased` is what the loop updates in place (the donated state);
    `temporaries` are the step's intermediate tensors (the `(batch,
    latent_dim)` activations and their gradients dominate). On a machine
    without a GPU this is XLA:CPU's assignment, an estimate of the GPU's.
    Use it to pick the largest batch or dictionary that fits a device.

    Args:
        model: a compiled `SparseAutoencoder` (JAX backend, `jit_compile`).
        batch_size: int >= 1, rows per training step.
        chunk_rows: int >= batch_size, rows of the data chunk on the
            device; default `4 * batch_size`.

    Returns:
        A dict with `argument_bytes`, `output_bytes`, `alias_bytes`,
        `temp_bytes`, `peak_bytes` and `compile_seconds`.

    Example (JAX backend):

    ```python
    model = gsl.build_gated_sae(2304, 131072, 1e-3)
    model.compile(keras.optimizers.Adam(1e-4))
    gsl.train_step_memory(model, batch_size=4096)["peak_bytes"] / 2**30
    ```
    """
    import time

    if keras.backend.backend() != "jax":
        raise ValueError(
            "`train_step_memory` compiles the JAX training loop: set "
            "KERAS_BACKEND=jax. Received: backend="
            f"{keras.backend.backend()!r}")
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"Model '{model.name}' must be compiled (`model.compile(optimizer)`) "
            "before `train_step_memory`.")
    batch_size = check_positive_int(batch_size, "batch_size")
    chunk_rows = 4 * batch_size if chunk_rows is None else check_positive_int(
        chunk_rows, "chunk_rows")
    if chunk_rows < batch_size:
        raise ValueError(
            "`chunk_rows` must be at least `batch_size`. Received: "
            f"chunk_rows={chunk_rows}, batch_size={batch_size}")
    from gated_sae_layers.models._fit.device_resident import lowered_train_loop

    started = time.perf_counter()
    analysis = lowered_train_loop(model, batch_size, chunk_rows).compile(
        ).memory_analysis()
    seconds = time.perf_counter() - started
    sizes = {name: int(getattr(analysis, f"{name}_size_in_bytes"))
             for name in ("argument", "output", "alias", "temp")}
    result = {f"{name}_bytes": value for name, value in sizes.items()}
    result["peak_bytes"] = (sizes["argument"] + sizes["output"] - sizes["alias"]
                            + sizes["temp"])
    result["compile_seconds"] = seconds
    return result
