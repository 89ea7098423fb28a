"""`fit` with the activations on the accelerator: the JAX backend's fast path.

The stock Keras `fit` on JAX does, for every batch: a shuffled gather of the
rows on the host, a synchronous copy of that batch to the device, and one
dispatch of the compiled step from Python. At SAE sizes the copy and the
dispatch cost as much as the step itself. `SparseAutoencoder.fit` therefore
trains in-memory activations (`numpy` or JAX arrays) on JAX like this:

- the rows go to the device in large chunks (the whole array when it fits in
  a quarter of the free device memory), the next chunk uploading while the
  current one trains; a chunk that is the whole array is uploaded once per
  `fit`, not once per epoch;
- each chunk is checked for NaN/Inf once, on the device, before any step
  uses it (`ValueError` naming the rows, as for the host check);
- rows are shuffled on the device: the chunk order and a permutation of the
  rows in each chunk change every epoch;
- up to `steps_per_dispatch` steps run in one compiled `while` loop, so
  Python dispatches once per many steps; batch callbacks then see every
  `steps_per_dispatch`-th step, as with Keras's `steps_per_execution`;
- a step whose loss is not finite leaves every variable (weights, optimizer
  state, metrics) as it was before that step, the loop stops on the device,
  and `fit` raises a `ValueError` that says at which step.

Everything else is the stock `fit`: `History`, the progress bar, callbacks,
`validation_data`/`validation_split` (evaluated by the stock `evaluate`),
`initial_epoch`, `stop_training`.

It reads Keras's trainer through `gated_sae_layers._keras_compat` only,
plus the public `train_step(state, data)` structure (in
`finite_step.guarded_train_step`), `compute_loss_and_updates` and
`jax_state_sync`.
"""

import math

import keras
import numpy as np

from gated_sae_layers import _keras_compat as compat
from gated_sae_layers.activations.store import ActivationStore
from gated_sae_layers.models._fit.arguments import RESIDENT_FIT_ARGUMENTS
from gated_sae_layers.models._fit.device_chunks import DeviceChunks, default_chunk_rows
from gated_sae_layers.models._fit.finite_step import (
    guarded_train_step,
    non_finite_step_message,
)

# Steps per dispatch when neither `compile(steps_per_execution=...)` nor a
# callback with batch hooks asks for fewer. At 0.1 ms a step (a small SAE on
# a GPU) a dispatch then lasts about 10 ms, far above its ~0.5 ms overhead.
AUTO_STEPS_PER_DISPATCH = 128


def unsupported_reason(model, x, y, kwargs):
    """Why the device-resident path cannot run this `fit`, or `None`."""
    if keras.backend.backend() != "jax":
        return f"the backend is {keras.backend.backend()}, not jax"
    if model.run_eagerly or not model.jit_compile:
        return "the model was compiled with run_eagerly=True or jit_compile=False"
    if keras.distribution.distribution() is not None:
        return "a keras.distribution is set"
    if model.target is not None:
        return "the model reads its target from an output"
    if isinstance(x, ActivationStore):
        if kwargs.get("validation_split"):
            return "`validation_split` needs an array, not an ActivationStore"
    elif not (hasattr(x, "shape") and hasattr(x, "dtype")) or callable(
            getattr(x, "element_spec", None)):
        return "`x` is not an in-memory array or an ActivationStore"
    if y is not None and y is not x:
        if not model.is_transcoder:
            return "`y` is given"
        if isinstance(x, ActivationStore) or not (
                hasattr(y, "shape") and hasattr(y, "dtype")) or callable(
                getattr(y, "element_spec", None)):
            return "`x` and `y` are not both in-memory arrays"
        if len(y) != len(x):
            return "`x` and `y` have different numbers of rows"
    for name, value in kwargs.items():
        if name not in RESIDENT_FIT_ARGUMENTS + ("callbacks",) and value is not None:
            return f"`{name}` is given"
    if kwargs.get("shuffle", True) == "batch":
        return "shuffle='batch'"
    return None


def _has_batch_hooks(callback):
    for hook in ("on_batch_begin", "on_batch_end", "on_train_batch_begin",
                 "on_train_batch_end"):
        method = getattr(type(callback), hook, None)
        if method is not None and method is not getattr(
                keras.callbacks.Callback, hook):
            return True
    return False


def steps_per_dispatch(model, callbacks, steps_left):
    """How many steps the next dispatch runs (at most `steps_left`).

    `compile`'s `steps_per_execution` if set; else 1 while a callback needs
    every batch; else up to `AUTO_STEPS_PER_DISPATCH`, or fewer where a
    callback's `max_steps_per_dispatch` says so (`TargetL0` steers every few
    steps). A callback needs every batch if it overrides a batch hook,
    unless it sets `coarse_batch_hooks = True` or its `needs_every_batch()`
    returns False (`SparsityWarmup` does once its ramp is over).
    """
    if model.steps_per_execution > 1:
        return min(model.steps_per_execution, steps_left)
    coarse_ok = (keras.callbacks.History, keras.callbacks.ProgbarLogger)
    limit = AUTO_STEPS_PER_DISPATCH
    for callback in callbacks:
        limit = min(limit, getattr(callback, "max_steps_per_dispatch", limit))
        if isinstance(callback, coarse_ok) or getattr(
                callback, "coarse_batch_hooks", False):
            continue
        needs_every_batch = getattr(callback, "needs_every_batch", None)
        if needs_every_batch is not None:
            if needs_every_batch():
                return 1
        elif _has_batch_hooks(callback):
            return 1
    return max(1, min(limit, steps_left))


def _make_runner(model, batch_size, input_dtype, input_dim=None):
    """A jitted loop of `num_steps` train steps on rows of a device chunk.

    `(state, logs, chunk, order, first_row, num_steps, stopped)` ->
    `(state, logs, bad, steps_done)`: step `i` trains on the rows
    `chunk[order[first_row + i * batch_size:][:batch_size]]`. The loop runs
    no step when `stopped` is true and ends after a step whose loss is not
    finite, keeping the state from before that step (`bad` is then true).
    With `input_dim` (a transcoder's pairs, `[x | y]` side by side in the
    chunk) each batch's first `input_dim` columns are `x`, the rest `y`.
    """
    import jax
    import jax.numpy as jnp

    def run(state, logs, chunk, order, first_row, num_steps, stopped):
        def body(carry):
            step, state, logs, _ = carry
            rows = jax.lax.dynamic_slice(
                order, (first_row + step * batch_size,), (batch_size,))
            batch = jnp.take(chunk, rows, axis=0).astype(input_dtype)
            if input_dim is None:
                state, logs, finite = guarded_train_step(model, state, logs, batch)
            else:
                state, logs, finite = guarded_train_step(
                    model, state, logs, batch[:, :input_dim], batch[:, input_dim:])
            return step + 1, state, logs, jnp.logical_not(finite)

        def condition(carry):
            step, _, _, bad = carry
            return jnp.logical_and(step < num_steps, jnp.logical_not(bad))

        steps_done, state, logs, bad = jax.lax.while_loop(
            condition, body, (jnp.int32(0), state, logs, stopped))
        return state, logs, bad, steps_done

    return jax.jit(run, donate_argnums=0)


def _permutation(seed, salt, rows):
    """A permutation of `range(rows)` drawn on the device (one dispatch)."""
    import jax

    global _jitted_permutation
    if _jitted_permutation is None:
        def permutation(seed, salt, rows):
            key = jax.random.fold_in(jax.random.PRNGKey(seed), salt)
            return jax.random.permutation(key, rows).astype("int32")

        _jitted_permutation = jax.jit(permutation, static_argnums=2)
    return _jitted_permutation(seed, salt, rows)


_jitted_permutation = None


def _zero_logs(model, state, batch_size, input_dim, input_dtype, target_dim=None):
    import jax
    import jax.numpy as jnp

    data = (jax.ShapeDtypeStruct((batch_size, input_dim), input_dtype),)
    if target_dim is not None:
        data += (jax.ShapeDtypeStruct((batch_size, target_dim), input_dtype),)
    logs, _ = jax.eval_shape(model.train_step, state, data)
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), logs)


def lowered_train_loop(model, batch_size, chunk_rows, input_dtype="float32"):
    """The device-resident loop of `model`, lowered for a chunk, not run.

    `(lowered, seconds)`: `lowered.compile().memory_analysis()` gives XLA's
    buffer sizes for one dispatch over `chunk_rows` rows in batches of
    `batch_size`. Builds the optimizer if needed; the weights do not change.
    """
    import jax

    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    # Shapes and dtypes only: the variables' values are never read, so a
    # model built by `shapes_only_model` (no memory behind it) lowers too.
    abstract = tuple(
        [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in variables]
        for variables in (model.trainable_variables, model.non_trainable_variables,
                          model.optimizer.variables, model.metrics_variables))
    state = abstract
    input_dim = int(model.inputs[0].shape[-1])
    logs = _zero_logs(model, state, batch_size, input_dim, input_dtype)
    run = _make_runner(model, batch_size, input_dtype)
    return run.lower(
        abstract, logs,
        jax.ShapeDtypeStruct((chunk_rows, input_dim), input_dtype),
        jax.ShapeDtypeStruct((chunk_rows,), "int32"), 0, 1, False)


class _Trainer:
    """The epoch loop of the device-resident `fit` for one model and data."""

    def __init__(self, model, x, batch_size, shuffle, chunk_rows, y=None):
        import jax

        self.jax = jax
        self.model = model
        self.batch_size = batch_size
        self.shuffle = shuffle
        is_store = isinstance(x, ActivationStore)
        self.input_dim = x.input_dim if is_store else int(x.shape[1])
        # A transcoder's pairs travel as one array, `[x | y]` side by side:
        # one upload, one NaN check and one shuffle keep the rows aligned.
        self.target_dim = None if y is None else int(y.shape[1])
        if y is not None:
            x = np.concatenate([np.asarray(x), np.asarray(y, dtype=np.asarray(x).dtype)],
                               axis=1)
        self.input_dtype = model.inputs[0].dtype
        if chunk_rows is None:
            chunk_rows = default_chunk_rows(
                int(x.shape[1]) * np.dtype(str(x.dtype)).itemsize, batch_size)
        else:
            chunk_rows = max(batch_size, chunk_rows // batch_size * batch_size)
        self.chunks = (DeviceChunks.from_store(x, chunk_rows) if is_store
                       else DeviceChunks.from_array(x, chunk_rows))
        # Compiled loops live in the model's caches (`ModelCaches`), so later
        # `fit` calls reuse them; `SparseAutoencoder.compile` empties them.
        self._runners = model.caches.device_resident_runners
        self._seed = np.random.randint(0, 2**31 - 1)
        self._pending = []   # dispatched, not yet checked: (bad, done, first)
        self._stopped = jax.numpy.bool_(False)

    def runner(self, batch_size):
        """The compiled loop for `batch_size` and logs to start it with."""
        plan = getattr(self.model, "sparse_plan", None)
        paired = None if self.target_dim is None else self.input_dim
        key = (batch_size, str(self.input_dtype),
               None if plan is None else plan.cache_key(), paired)
        if key not in self._runners:
            self._runners[key] = (
                _make_runner(self.model, batch_size, self.input_dtype, paired),
                _zero_logs(self.model, self.state, batch_size,
                           self.input_dim, self.input_dtype, self.target_dim))
        return self._runners[key]

    def order(self, index, epoch, rows):
        """The rows of chunk `index` in the order epoch `epoch` trains them."""
        if not self.shuffle:
            return self.jax.numpy.arange(rows, dtype="int32")
        return _permutation(self._seed, epoch * 65537 + index, rows)

    def plan(self, epoch):
        """The order in which the chunks train in `epoch`."""
        indices = list(range(len(self.chunks.bounds)))
        if self.shuffle and len(indices) > 1:
            np.random.default_rng([self._seed, epoch]).shuffle(indices)
        return indices

    def check_pending(self, keep_last):
        """Raises if a dispatched loop met a non-finite loss."""
        while len(self._pending) > keep_last:
            bad, done, first = self._pending.pop(0)
            if bool(bad):
                step = first + int(done) - 1
                raise ValueError(non_finite_step_message(
                    f"at step {step} (counted from 0 in this epoch)"))

    def dispatches(self, chunk_rows, callbacks):
        """`(batch_size, first_row, num_steps)` per dispatch over a chunk."""
        full, tail = divmod(chunk_rows, self.batch_size)
        first = 0
        while first < full:
            count = steps_per_dispatch(self.model, callbacks, full - first)
            yield self.batch_size, first * self.batch_size, count
            first += count
        if tail:
            yield tail, full * self.batch_size, 1

    def run_epoch(self, epoch, callbacks):
        model, step, logs = self.model, 0, None
        chunk_order = self.plan(epoch)
        for position, index in enumerate(chunk_order):
            chunk = self.chunks.get(index)
            if position + 1 < len(chunk_order):
                self.chunks.prefetch(chunk_order[position + 1])
            rows = int(chunk.shape[0])
            order = self.order(index, epoch, rows)
            for batch_size, first, count in self.dispatches(
                    rows, callbacks.callbacks):
                callbacks.on_train_batch_begin(step)
                if compat.jax_variables_current(model):
                    self.state = compat.take_jax_state(model)
                    compat.set_jax_variables_current(model, False)
                run, zero_logs = self.runner(batch_size)
                state, logs, bad, done = run(
                    self.state, zero_logs, chunk, order, first, count,
                    self._stopped)
                self.state, self._stopped = state, bad
                compat.hold_jax_state(model, state)
                self._pending.append((bad, done, step))
                self.check_pending(keep_last=1)
                step += count
                callbacks.on_train_batch_end(step - 1, logs)
                if model.stop_training:
                    break
            if model.stop_training:
                break
        self.check_pending(keep_last=0)
        return logs


def device_resident_fit(model, x, y=None, batch_size=None, epochs=1, verbose="auto",
                        callbacks=None, validation_split=0.0,
                        validation_data=None, shuffle=True, initial_epoch=0,
                        validation_batch_size=None, validation_freq=1,
                        device_chunk_rows=None):
    """The body of `SparseAutoencoder.fit` on JAX for in-memory activations."""
    compat.assert_compiled(model, "fit")
    # `run_fit` checked the arguments (`arguments.check_fit_arguments`): a
    # positive int or None, and a split leaving rows on both sides.
    batch_size = batch_size or 32
    if validation_split and validation_data is None:
        split_at = int(math.floor(len(x) * (1.0 - validation_split)))
        x, validation_data = x[:split_at], (x[split_at:],) + (
            () if y is None else (y[split_at:],))
        y = None if y is None else y[:split_at]
    trainer = _Trainer(model, x, batch_size, shuffle, device_chunk_rows, y)
    compat.symbolic_build(model, (keras.KerasTensor(
        (batch_size, trainer.input_dim), trainer.input_dtype),))
    steps_per_epoch = sum(math.ceil((stop - start) / batch_size)
                          for start, stop in trainer.chunks.bounds)
    if not isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0,
            verbose=verbose, epochs=epochs, steps=steps_per_epoch, model=model)
    if validation_data is not None:
        val_x, val_y, val_sample_weight = (
            keras.utils.unpack_x_y_sample_weight(validation_data))

    model.stop_training = False
    training_logs, finished = {}, False
    callbacks.on_train_begin()
    initial_epoch = compat.first_epoch(model, initial_epoch)
    try:
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            callbacks.on_epoch_begin(epoch)
            compat.set_jax_variables_current(model, True)
            logs = trainer.run_epoch(epoch, callbacks)
            model.jax_state_sync()
            epoch_logs = compat.epoch_logs(model, logs)
            if validation_data is not None and compat.should_evaluate(
                    model, epoch, validation_freq):
                val_logs = keras.Model.evaluate(
                    model, val_x, val_y, sample_weight=val_sample_weight,
                    batch_size=validation_batch_size or batch_size,
                    callbacks=callbacks, return_dict=True)
                epoch_logs.update(
                    {f"val_{name}": value for name, value in val_logs.items()})
            callbacks.on_epoch_end(epoch, epoch_logs)
            training_logs = epoch_logs
            if model.stop_training:
                break
        finished = True
    finally:
        model.jax_state_sync()
        if epochs > 0 and isinstance(model.optimizer, keras.optimizers.Optimizer):
            model.optimizer.finalize_variable_values(model.trainable_weights)
        if finished:
            callbacks.on_train_end(logs=training_logs)
        compat.drop_jax_state(model)
    return model.history
