"""The latent layout: `latent_layout_map` and `latent_parallel` (JAX).

`latent_parallel` (a `keras.distribution.ModelParallel` built on
`latent_layout_map`) splits the *latent* dimension of the SAE over
devices, so a dictionary too large for one device trains on many. Which
variables of an encoder carry the latent axis is declared by the encoder
class itself (`SparseEncoder.latent_axes`, beside its `build`), not by a
table here: an encoder class that declares nothing raises when it is built
under a latent layout, instead of training silently unsharded.

See `docs/distributed.md` for worked examples, multi-host included.
"""

import re
import weakref

import keras

from gated_sae_layers._validation import check_positive_int

# The mesh axis names used by `latent_parallel` and, by default, by
# `latent_layout_map`.
BATCH_AXIS = "batch"
LATENT_AXIS = "model"

# Each encoder class declares the axes of the variables it creates, beside its
# `build` (`SparseEncoder.latent_axes`, `LATENT` marking the latent axis);
# `SparseEncoder.__init_subclass__` registers every encoder class here, so
# the layout of an encoder's variable is read from its class, never from a
# table kept here.
LATENT = "latent"
_ENCODER_CLASSES = weakref.WeakSet()


def register_encoder(encoder_class):
    """Records `encoder_class` (a `SparseEncoder` subclass) for the latent layout.

    Called by `SparseEncoder.__init_subclass__`: every encoder class is
    registered when it is defined. Its `latent_axes` (None: nothing
    declared) says how each variable it creates is laid out.
    """
    _ENCODER_CLASSES.add(encoder_class)
    return encoder_class


def _check_declaration(encoder_class):
    axes = getattr(encoder_class, "latent_axes", None)
    if axes is None:
        return None
    if not isinstance(axes, dict) or not all(
            isinstance(name, str) and isinstance(value, tuple)
            and all(axis in (None, LATENT) for axis in value)
            for name, value in axes.items()):
        raise TypeError(
            f"`{encoder_class.__name__}.latent_axes` must be a dict mapping each "
            f"variable name to its axes, a tuple of None and {LATENT!r} (the "
            f"latent axis). Received: latent_axes={axes!r}")
    return axes


def encoder_variable_axes(variable_name):
    """The axes (`LATENT` or None) that the registered encoders declare for a variable.

    Returns:
        The axes tuple, or None if no encoder class declares `variable_name`;
        raises a `ValueError` if two classes declare it differently (a path
        names a variable, not its layer's class).
    """
    found = {}
    for encoder_class in list(_ENCODER_CLASSES):
        axes = _check_declaration(encoder_class)
        if axes is not None and variable_name in axes:
            found.setdefault(axes[variable_name], []).append(encoder_class.__name__)
    if len(found) > 1:
        raise ValueError(
            f"Encoder classes declare the variable {variable_name!r} with different "
            f"axes ({ {axes: sorted(names) for axes, names in found.items()} }); "
            "`latent_layout_map` matches variables by path, so one name needs one "
            "layout. Rename the variable in one of them.")
    return next(iter(found), None)


def check_encoder_variable(encoder, variable_name):
    """Raises unless `encoder`'s class declares `variable_name`, under a latent layout.

    Called by `SparseEncoder.add_weight` for every variable an encoder
    creates: while a distribution whose layout map is a `latent_layout_map`
    is set, an encoder class with no `latent_axes`, or one that leaves out
    this variable, raises a `ValueError` instead of leaving the variable
    silently unsharded. Elsewhere it does nothing.
    """
    layout_map = getattr(keras.distribution.distribution(), "_layout_map", None)
    if not isinstance(layout_map, LatentLayoutMap):
        return
    encoder_class = type(encoder)
    axes = _check_declaration(encoder_class)
    if axes is None:
        raise ValueError(
            f"{encoder_class.__name__} declares no `latent_axes`, so "
            "`latent_layout_map` cannot tell which of its variables carry the latent "
            "axis. Declare them on the class, beside its `build`, e.g. "
            f"`latent_axes = {{'kernel': (None, {LATENT!r}), 'bias': ({LATENT!r},)}}` "
            "(see docs/architecture.md).")
    if variable_name not in axes:
        raise ValueError(
            f"{encoder_class.__name__} creates the variable {variable_name!r} but its "
            f"`latent_axes` does not declare it (it declares {sorted(axes)}): "
            "`latent_layout_map` would leave it unsharded. Add it to `latent_axes`, "
            "with () or None axes if it has no latent axis.")


# Keras also looks up `<layer path>/output`, the layout of a layer's output
# tensor: not a variable, left to Keras (replicated).
_OUTPUT = "output"


class LatentLayoutMap(keras.distribution.LayoutMap):
    """The `LayoutMap` of `latent_layout_map`: encoder variables come from their classes.

    A path `(.../)<encoder_name>/<variable>` takes the axes the encoder
    classes declare for `<variable>` (`SparseEncoder.latent_axes`), read when
    it is looked up, so an encoder class defined after the map was made is
    laid out too; a variable no encoder class declares raises a
    `ValueError` (`<encoder_name>/output`, the encoder's output tensor that
    Keras also looks up, is left replicated). Other paths match the map's
    patterns as in `LayoutMap`.
    """

    def __init__(self, device_mesh, latent_axis, encoder_name):
        super().__init__(device_mesh)
        self._latent_axis = latent_axis
        self._encoder_pattern = re.compile(
            f"(?:.*/)?{re.escape(encoder_name)}/([^/]+)")

    def __getitem__(self, key):
        layout = super().__getitem__(key)
        match = self._encoder_pattern.fullmatch(key) if isinstance(key, str) else None
        if layout is not None or match is None or match.group(1) == _OUTPUT:
            return layout
        axes = encoder_variable_axes(match.group(1))
        if axes is None:
            raise ValueError(
                f"No encoder class declares the variable {match.group(1)!r} of "
                f"{key!r} in its `latent_axes`, so `latent_layout_map` cannot lay it "
                "out. Declare it on the encoder class, beside its `build` (see "
                "docs/architecture.md).")
        if LATENT not in axes:
            return None     # declared without a latent axis: replicated
        return keras.distribution.TensorLayout(
            tuple(self._latent_axis if axis == LATENT else None for axis in axes),
            self.device_mesh)


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
    layout_map = LatentLayoutMap(device_mesh, latent_axis, encoder_name)
    # The encoder's variables are looked up from the encoder classes
    # (`LatentLayoutMap`); the decoder's and the metrics' are fixed here.
    groups = ((re.escape(decoder_name) + "/", _DECODER_VARIABLES),
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
