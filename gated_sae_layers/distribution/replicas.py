"""The TensorFlow replicas: the kit's only uses of `tf.distribute`.

Under `tf.distribute.MirroredStrategy` each replica runs a step on its share
of the batch; `SparseAutoencoder` and the metrics use these helpers to sum
their losses and counts over the replicas (checked on TF 2.21, Keras 3.15).
Elsewhere (one device, or JAX's `keras.distribution`, where one program sees
the global batch) each is the identity.
"""

import keras
def _replica_context():
    """The `tf.distribute` replica context with more than one replica, or None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def num_replicas_in_sync():
    """The number of `tf.distribute` replicas the current step runs on; 1 elsewhere.

    On JAX (`keras.distribution`) a step is one program over the global
    batch, so this is 1.
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def sum_over_replicas(value):
    """`value` summed over the `tf.distribute` replicas; `value` elsewhere.

    Call it inside a replica's step (`compute_loss`, `update_state`) on every
    replica alike: it is a collective, each replica waits for the others.
    """
    context = _replica_context()
    if context is None:
        return value
    return context.all_reduce("sum", value)


def check_jit_compile(jit_compile):
    """Raises if `jit_compile=True` meets a multi-replica CPU `tf.distribute` strategy.

    XLA cannot read a variable's copy on another device: TensorFlow fails
    with `Trying to access resource ... located in device CPU:1 from device
    CPU:0` (checked on TF 2.21 with 2 logical CPU devices). Only CPU
    replicas are refused: TensorFlow supports XLA with `MirroredStrategy` on
    GPUs (not tested here).
    """
    if not jit_compile or keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync <= 1:
        return
    devices = tuple(strategy.extended.worker_devices)
    if any("CPU" in device.upper().rsplit("/", 1)[-1] for device in devices):
        raise ValueError(
            f"`jit_compile=True` does not work with {type(strategy).__name__} "
            f"over CPU devices: XLA cannot reach a variable's copy on another "
            f"device. Compile with `jit_compile=False` (or the default "
            f"'auto', which is off on CPU), or use the JAX backend with "
            f"`keras.distribution.DataParallel`. Received: jit_compile=True, "
            f"devices={devices}")


def read_across_replicas(function):
    """Calls `function()` where metric variables read their all-replica value.

    A Keras metric's variables are kept per replica under `tf.distribute`
    and summed when read outside a replica's step; inside a step each
    replica sees only its own share. `function()` runs in the strategy's
    cross-replica context (`merge_call`), so `metric.result()` there is
    the metric of the global batch. Elsewhere it just calls `function()`.
    """
    context = _replica_context()
    if context is None:
        return function()
    return context.merge_call(lambda strategy: function())
