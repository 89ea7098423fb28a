"""What `fit` leaves behind when it stops with an exception.

Keras skips `on_train_end` when `fit` raises, and on JAX it trains with the
weights moved out of the variables (`purge_model_variables`), putting them
back at the end of each epoch. An exception in between (a bad batch,
Ctrl-C) would leave the variables empty, and a callback that changes the
model while training (`SparsityWarmup`) would leave its change half done.

- `keep_weights_on_error` puts back the state of the last finished step, or
  the weights from before `fit` when no step finished (JAX only: on
  TensorFlow the variables always hold the current weights).
- `tell_callbacks_on_error` calls `on_train_error(error)` of the callbacks
  that define one.
"""

import contextlib

import keras

from gated_sae_layers import _keras_compat as compat


class _ReleaseSnapshot(keras.callbacks.Callback):
    """Drops the pre-`fit` snapshot once a step has finished (saves memory).

    Safe to run in Keras's callback thread and every few steps: a callback
    with `on_train_batch_end` otherwise makes Keras convert the logs to
    Python floats after every step, which waits for the device each time.
    """

    async_safe = True
    coarse_batch_hooks = True

    def __init__(self, holder):
        super().__init__()
        self.holder = holder

    def on_train_batch_end(self, batch, logs=None):
        self.holder.clear()


def _all_variables(model):
    variables = list(model.trainable_variables) + list(
        model.non_trainable_variables) + list(model.metrics_variables)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    return variables


@contextlib.contextmanager
def keep_weights_on_error(model, callbacks):
    """Context for `fit`; appends its helper callback to `callbacks` (a list)."""
    if keras.backend.backend() != "jax":
        yield
        return
    snapshot = [(v, v.value) for v in _all_variables(model)]
    callbacks.append(_ReleaseSnapshot(snapshot))
    try:
        yield
    except BaseException:
        if compat.holds_jax_state(model):
            compat.restore_jax_state(model)
        else:
            for variable, value in snapshot:
                if compat.variable_is_purged(variable):
                    variable.assign(value)
        raise


@contextlib.contextmanager
def tell_callbacks_on_error(callbacks):
    """Calls `on_train_error(error)` of the callbacks that have one when
    `fit` raises: Keras then skips `on_train_end`, which would leave, say, a
    `SparsityWarmup`'s half-ramped coefficient in the model."""
    try:
        yield
    except BaseException as error:
        for callback in callbacks:
            if callable(getattr(callback, "on_train_error", None)):
                callback.on_train_error(error)
        raise
