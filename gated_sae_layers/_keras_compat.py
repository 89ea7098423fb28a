"""The one home of every private Keras attribute the kit reads or writes.

Keras 3 keeps some things a library needs behind underscores. Each is
reached through one function here, checked against Keras 3.15 (the file and
the attribute are named in each docstring), and `tests/test_keras_compat.py`
fails loudly when an upgrade moves one. Nothing else in the package touches
an underscore attribute of a Keras object.
"""

import keras

KERAS_VERSION_CHECKED = "3.15"

_JAX_STATE_NAMES = ("trainable_variables", "non_trainable_variables",
                    "optimizer_variables", "metrics_variables")


# ------------------------------------------------------------ layers, models
def sublayers(model):
    """Every layer inside `model`, nested models' layers included, in order.

    `Layer._flatten_layers` (keras/src/layers/layer.py).
    """
    return list(model._flatten_layers(include_self=False))


def run_graph(model, inputs, operation_fn):
    """Runs a Functional model's graph, each layer as `operation_fn(layer)`.

    `operation_fn(layer)` returns the callable run at each of the layer's
    nodes with that node's arguments; a value a node hands on may be any
    Python object that `keras.tree` treats as a leaf. Returns the outputs
    in the model's structure.

    `Function._run_through_graph` (keras/src/ops/function.py).
    """
    return model._run_through_graph(inputs, operation_fn=operation_fn)


def in_layer_scope(layer, function, *args, **kwargs):
    """`function(*args, **kwargs)` as if it ran inside `layer.__call__`.

    Floating tensor arguments are cast to the layer's compute dtype and the
    layer's variables are read in it (the autocast scope that
    `Layer.__call__` opens under mixed precision), so a method such as a
    sparse-path `sparse_call` computes in the dtypes `call` would.

    `backend.AutocastScope` and `Layer.autocast` (keras/src/layers/layer.py,
    `__call__`, steps 1 and 7).
    """
    from keras.src import backend

    def convert(value):
        if layer.autocast and backend.is_tensor(value) and backend.is_float_dtype(
                backend.standardize_dtype(value.dtype)):
            return keras.ops.cast(value, layer.compute_dtype)
        return value

    args = keras.tree.map_structure(convert, args)
    kwargs = keras.tree.map_structure(convert, kwargs)
    if layer.autocast and layer.compute_dtype != layer.variable_dtype:
        with backend.AutocastScope(layer.compute_dtype):
            return function(*args, **kwargs)
    return function(*args, **kwargs)


def output_structure(model):
    """A Functional model's outputs as it was built (a dict stays a dict).

    `Functional._outputs_struct` (keras/src/models/functional.py).
    """
    return getattr(model, "_outputs_struct", None)


def optimizer_slots(optimizer, variable):
    """The optimizer's per-variable state tensors (Adam moments, ...) for `variable`.

    `Optimizer._trainable_variables`, `_get_variable_index`
    (keras/src/optimizers/base_optimizer.py).
    """
    trainable = getattr(optimizer, "_trainable_variables", None) or []
    if not any(v is variable for v in trainable):
        return []
    index = optimizer._get_variable_index(variable)
    slots = []
    for value in vars(optimizer).values():
        if (isinstance(value, (list, tuple)) and len(value) == len(trainable)
                and all(isinstance(v, keras.Variable) for v in value)
                and value is not trainable):
            slot = value[index]
            if tuple(slot.shape) == tuple(variable.shape):
                slots.append(slot)
    return slots


def optimizer_variable_index(optimizer, variable):
    """The position of `variable` among the optimizer's variables.

    `Optimizer._get_variable_index` (keras/src/optimizers/base_optimizer.py;
    on TensorFlow it also maps the raw `tf.Variable`s and the replicas of a
    `tf.distribute` strategy that `update_step` receives).
    """
    return optimizer._get_variable_index(variable)


# --------------------------------------- Trainer (keras/src/trainers/trainer.py)
def assert_compiled(model, method):
    """Raises Keras's own error when `model.compile` was not called.

    `Trainer._assert_compile_called`.
    """
    model._assert_compile_called(method)


def symbolic_build(model, data_batch):
    """Builds the model, its metrics and optimizer on a symbolic batch.

    `Trainer._symbolic_build`.
    """
    model._symbolic_build(data_batch=data_batch)


def first_epoch(model, initial_epoch):
    """The epoch `fit` starts from: a `BackupAndRestore`'s, else `initial_epoch`.

    `Trainer._initial_epoch` (set by `BackupAndRestore.on_train_begin`).
    """
    return model._initial_epoch or initial_epoch


def epoch_logs(model, logs):
    """The epoch's logs as the stock `fit` reports them.

    `Trainer._get_metrics_result_or_logs`.
    """
    return dict(model._get_metrics_result_or_logs(logs))


def should_evaluate(model, epoch, validation_freq):
    """Whether `fit` runs validation after `epoch`. `Trainer._should_eval`."""
    return model._should_eval(epoch, validation_freq)


def loss_tracker(model):
    """The `Mean` metric behind the logged `loss`. `Trainer._loss_tracker`."""
    return model._loss_tracker


# ---------------------------- JAX trainer (keras/src/backend/jax/trainer.py)
def update_metrics_variables(model, metric_state, loss, x, y, y_pred):
    """`(logs, metric_state)` after one step, statelessly.

    `JAXTrainer._update_metrics_variables`.
    """
    return model._update_metrics_variables(metric_state, loss, x, y, y_pred, None)


def take_jax_state(model):
    """The model's state as the `train_step(state, data)` tuple, purging the
    variables (the state now lives in the returned arrays).

    `JAXTrainer._get_jax_state(..., purge_model_variables=True)`.
    """
    return model._get_jax_state(
        trainable_variables=True, non_trainable_variables=True,
        optimizer_variables=True, metrics_variables=True,
        purge_model_variables=True)


def read_jax_state(model):
    """The state tuple of `train_step(state, data)`, leaving the variables be.

    `JAXTrainer._get_jax_state`.
    """
    return model._get_jax_state(
        trainable_variables=True, non_trainable_variables=True,
        optimizer_variables=True, metrics_variables=True)


def hold_jax_state(model, state):
    """Records `state` as the model's current state; `jax_state_sync` (public)
    writes it back into the variables. `JAXTrainer._jax_state`."""
    model._jax_state = dict(zip(_JAX_STATE_NAMES, state))


def drop_jax_state(model):
    """Forgets the recorded state, as the stock `fit` does when it ends."""
    model._jax_state = None


def holds_jax_state(model):
    """Whether a trainer state is recorded and not yet written back."""
    return bool(getattr(model, "_jax_state", None))


def jax_variables_current(model):
    """Whether the variables hold the newest values (no state to take yet).

    `JAXTrainer._jax_state_synced`.
    """
    return model._jax_state_synced


def set_jax_variables_current(model, current):
    """Marks the variables as holding the newest values (`True`) or not."""
    model._jax_state_synced = current


def restore_jax_state(model):
    """Writes a recorded state back into the variables, even mid-epoch."""
    model._jax_state_synced = False
    model.jax_state_sync()


def variable_is_purged(variable):
    """Whether a JAX variable's value was moved out (`None`). `Variable._value`."""
    return variable._value is None
