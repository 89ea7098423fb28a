"""Training an SAE on more than one device, on the engines Keras already has.

Two engines, two routes:

- **JAX** (`keras.distribution`): `DataParallel` copies the model to every
  device and splits each batch; `latent_parallel` (a `ModelParallel` built
  on `latent_layout_map`) also splits the *latent* dimension of the SAE
  over devices, so a dictionary too large for one device trains on many.
  Set the distribution with `keras.distribution.set_distribution` **before**
  building the model: a variable is laid out when it is created.
- **TensorFlow** (`tf.distribute.MirroredStrategy`): build and compile the
  model inside `strategy.scope()`; `SparseAutoencoder` divides its extra
  losses by the number of replicas and logs every loss term and metric
  over the global batch. The helpers at the end of this module are the
  kit's only uses of `tf.distribute`.

See `docs/distributed.md` for worked examples, multi-host included.
"""

import re

import keras

from gated_sae_layers._validation import check_positive_int

# The mesh axis names used by `latent_parallel` and, by default, by
# `latent_layout_map`.
BATCH_AXIS = "batch"
LATENT_AXIS = "model"

# Variables of the kit's layers that have a latent axis, by layer role.
# Each entry: (variable name, position of the latent axis, rank).
_ENCODER_VARIABLES = (
    ("gate_kernel", 1, 2),          # GatedEncoder W_gate, (input_dim, latent_dim)
    ("kernel", 1, 2),               # ReLU/TopK/BatchTopK/JumpReLU W_enc
    ("gate_bias", 0, 1),            # GatedEncoder b_gate
    ("magnitude_log_scale", 0, 1),  # GatedEncoder r_mag
    ("magnitude_bias", 0, 1),       # GatedEncoder b_mag
    ("bias", 0, 1),                 # affine encoders' b_enc
    ("log_threshold", 0, 1),        # JumpReLU log(theta), per latent
    ("steps_since_fired", 0, 1),    # TopK/BatchTopK dead-latent counter
)
_DECODER_VARIABLES = (
    ("kernel", 0, 2),               # UnitNormDecoder W_dec, (latent_dim, input_dim)
)
# Metric accumulators with a latent axis, matched by variable name under
# any metric name: `DeadFeatures.fire_counts`, `(latent_dim,)`.
_METRIC_VARIABLES = (
    ("fire_counts", 0, 1),
)


def _axes(latent_position, rank, latent_axis):
    axes = [None] * rank
    axes[latent_position] = latent_axis
    return tuple(axes)


def _check_name(value, name):
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"`{name}` must be a non-empty string. Received: {name}={value!r}")
    return value


def latent_layout_map(device_mesh, latent_axis=LATENT_AXIS, encoder_name="encoder",
                      decoder_name="decoder"):
    """A `keras.distribution.LayoutMap` that shards every SAE of the kit over its latents.

    Every variable with a latent axis is split along that axis over the
    `latent_axis` of `device_mesh`; all the others (the decoder bias
    `b_dec`, the loss coefficients, the `BatchTopKEncoder` threshold, the
    metrics' sums over inputs) are replicated:

    - `(None, latent)`: `encoder/gate_kernel` (gated) and `encoder/kernel`
      (the other encoders), shape `(input_dim, latent_dim)`;
    - `(latent,)`: `encoder/gate_bias`, `encoder/magnitude_log_scale`,
      `encoder/magnitude_bias` (gated), `encoder/bias`,
      `encoder/log_threshold` (JumpReLU), `encoder/steps_since_fired`
      (TopK, BatchTopK), shape `(latent_dim,)`;
    - `(latent, None)`: `decoder/kernel`, shape `(latent_dim, input_dim)`;
    - `(latent,)`: `<metric name>/fire_counts` (`DeadFeatures`).

    Paths match with any prefix (`(.*/)?encoder/kernel`), so the layout also
    applies to an SAE nested in a larger model. The optimizer's slots (Adam
    moments) take the layout of their variable. Metric variables are laid
    out too: Keras looks up the layout of every variable it creates while a
    distribution is set, metrics included.

    Use it with `keras.distribution.ModelParallel` (or let `latent_parallel`
    build both), and set the distribution **before** building the model.
    `latent_dim` must be divisible by the size of the latent axis. JAX
    backend only (Keras's `keras.distribution` is a prototype on TensorFlow).

    Args:
        device_mesh: a `keras.distribution.DeviceMesh` with an axis named
            `latent_axis` (and usually one for the batch).
        latent_axis: str, the mesh axis to split the latents over.
        encoder_name: str, the name of the encoder layer (`"encoder"` in
            every `build_*` function of the kit).
        decoder_name: str, the name of the `UnitNormDecoder` layer
            (`"decoder"` in every `build_*` function).

    Returns:
        A `keras.distribution.LayoutMap` on `device_mesh`.

    Example:

    >>> import keras
    >>> mesh = keras.distribution.DeviceMesh(
    ...     shape=(1, 1), axis_names=("batch", "model"),
    ...     devices=keras.distribution.list_devices()[:1])
    >>> layout_map = latent_layout_map(mesh)
    >>> layout_map["decoder/kernel"].axes
    ('model', None)
    >>> layout_map["encoder/gate_kernel"].axes, layout_map["encoder/bias"].axes
    ((None, 'model'), ('model',))
    >>> layout_map["dead_features/fire_counts"].axes
    ('model',)
    >>> layout_map["decoder/bias"] is None    # replicated
    True

    On 4 devices (JAX backend), shard the latents 4 ways, then build:

    ```python
    mesh = keras.distribution.DeviceMesh(
        (1, 4), ("batch", "model"), keras.distribution.list_devices())
    keras.distribution.set_distribution(keras.distribution.ModelParallel(
        layout_map=latent_layout_map(mesh), batch_dim_name="batch"))
    model = gsl.build_gated_sae(512, 16384, sparsity_coefficient=3e-4)
    ```
    """
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise TypeError(
            "`device_mesh` must be a `keras.distribution.DeviceMesh`. Received: "
            f"device_mesh={device_mesh!r} of type {type(device_mesh).__name__}")
    latent_axis = _check_name(latent_axis, "latent_axis")
    encoder_name = _check_name(encoder_name, "encoder_name")
    decoder_name = _check_name(decoder_name, "decoder_name")
    if latent_axis not in device_mesh.axis_names:
        raise ValueError(
            f"`latent_axis` must name an axis of `device_mesh` "
            f"{list(device_mesh.axis_names)}. Received: latent_axis={latent_axis!r}")
    if encoder_name == decoder_name:
        raise ValueError(
            "`encoder_name` and `decoder_name` must differ. Received: "
            f"encoder_name={encoder_name!r}, decoder_name={decoder_name!r}")
    layout_map = keras.distribution.LayoutMap(device_mesh)
    groups = ((re.escape(encoder_name) + "/", _ENCODER_VARIABLES),
              (re.escape(decoder_name) + "/", _DECODER_VARIABLES),
              ("", _METRIC_VARIABLES))
    for layer_prefix, variables in groups:
        for variable_name, latent_position, rank in variables:
            # fullmatch: the path ends in `<layer>/<variable>`, with any
            # (nested-model or metric-name) prefix before it.
            pattern = f"(?:.*/)?{layer_prefix}{re.escape(variable_name)}"
            layout_map[pattern] = _axes(latent_position, rank, latent_axis)
    return layout_map


def latent_parallel(latent_devices=None, batch_devices=1, devices=None):
    """A `keras.distribution.ModelParallel` that shards the SAE's latents (JAX).

    Lays `devices` out as a `(batch_devices, latent_devices)` mesh with axes
    `("batch", "model")`: each batch is split over `"batch"` (data
    parallelism) and every latent-indexed variable over `"model"`
    (`latent_layout_map`). Each device then holds `latent_dim /
    latent_devices` dictionary rows and `batch / batch_devices` examples.
    The training step is the one-device step, partitioned by XLA: losses,
    metrics and weights are those of one device, up to float round-off.

    Pass the result to `keras.distribution.set_distribution` **before**
    building the model (or build it inside `distribution.scope()`): a
    variable is laid out when it is created. In a multi-host job call
    `keras.distribution.initialize()` first; `devices` then defaults to the
    devices of every host (see `docs/distributed.md`).

    Args:
        latent_devices: int, the devices to split the latents over; default
            all of `devices` divided by `batch_devices`. `latent_dim` must
            be divisible by it.
        batch_devices: int, the devices to split each batch over (default 1:
            pure latent sharding). The batch size must be divisible by it.
        devices: the devices to use, as from
            `keras.distribution.list_devices()` (the default);
            `batch_devices * latent_devices` must equal their number.

    Returns:
        A `keras.distribution.ModelParallel`.

    Example (4 devices, JAX backend; for 4 CPU devices start Python with
    `XLA_FLAGS=--xla_force_host_platform_device_count=4`):

    >>> import keras, numpy as np
    >>> import gated_sae_layers as gsl
    >>> keras.distribution.set_distribution(
    ...     gsl.latent_parallel(latent_devices=2, batch_devices=2))
    ... # doctest: +SKIP
    >>> model = gsl.build_gated_sae(16, 64, sparsity_coefficient=1e-3)
    >>> model.compile(optimizer="adam")
    >>> history = model.fit(np.random.rand(256, 16).astype("float32"),
    ...                     batch_size=64, verbose=0)
    >>> model.decoder.kernel.value.sharding.spec    # doctest: +SKIP
    P('model', None)
    """
    if keras.backend.backend() != "jax":
        raise RuntimeError(
            "`latent_parallel` needs the JAX backend: Keras's "
            "`keras.distribution` is a prototype on other backends. Set "
            "KERAS_BACKEND=jax before importing keras, or on TensorFlow use "
            "`tf.distribute.MirroredStrategy` (data parallel; see "
            f"docs/distributed.md). Received: backend={keras.backend.backend()!r}")
    batch_devices = check_positive_int(batch_devices, "batch_devices")
    if devices is None:
        devices = keras.distribution.list_devices()
    devices = list(devices)
    if latent_devices is None:
        if len(devices) % batch_devices:
            raise ValueError(
                f"`batch_devices` must divide the number of devices "
                f"({len(devices)}). Received: batch_devices={batch_devices}")
        latent_devices = len(devices) // batch_devices
    latent_devices = check_positive_int(latent_devices, "latent_devices")
    if batch_devices * latent_devices != len(devices):
        raise ValueError(
            f"`batch_devices * latent_devices` must equal the number of "
            f"devices ({len(devices)}); to use fewer, pass "
            f"`devices=keras.distribution.list_devices()[:n]`. Received: "
            f"batch_devices={batch_devices}, latent_devices={latent_devices}")
    mesh = keras.distribution.DeviceMesh(
        shape=(batch_devices, latent_devices),
        axis_names=(BATCH_AXIS, LATENT_AXIS), devices=devices)
    return keras.distribution.ModelParallel(
        layout_map=latent_layout_map(mesh, LATENT_AXIS),
        batch_dim_name=BATCH_AXIS)


# ------------------------------------------------- TensorFlow replicas
# The kit's only uses of `tf.distribute` (checked on TF 2.21, Keras 3.15).


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
