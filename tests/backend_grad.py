"""Gradients of a scalar function of Keras variables, on TF or JAX."""

import keras
import numpy as np


def gradients(loss_fn, variables):
    """Returns d loss_fn() / d v for each variable, as numpy (zeros if none)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, [v.value for v in variables])
    elif backend == "jax":
        import jax

        def stateless(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn()

        grads = jax.grad(stateless)([v.value for v in variables])
    else:
        raise NotImplementedError(backend)
    return [np.zeros(tuple(v.shape)) if g is None else np.asarray(g)
            for g, v in zip(grads, variables)]
