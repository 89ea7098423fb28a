"""Keeps a model's weights when `fit` stops with an exception on JAX.

On the JAX backend Keras moves the weights out of the variables while it
trains (`purge_model_variables`) and puts them back at the end of each
epoch. An exception in between (a bad batch, Ctrl-C) leaves the variables
empty: the model is unusable and unsaveable. `keep_weights_on_error` puts
back the state of the last finished step, or the weights from before `fit`
when no step finished.
"""

import contextlib

import keras


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
        if getattr(model, "_jax_state", None):
            model._jax_state_synced = False
            model.jax_state_sync()
        else:
            for variable, value in snapshot:
                if variable._value is None:
                    variable.assign(value)
        raise
