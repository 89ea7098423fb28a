"""The model's input rule: bad data stops `fit` before any step uses it.

One rule for every input path. `check_model_data` is the entry point
`SparseAutoencoder.fit`, `evaluate`, `predict`, `encode` and
`initialize_decoder_bias` call.

In-memory arrays and `ActivationStore`s are checked whole, up front
(`activations.rows.check_rows`). Streams cannot be: a `tf.data.Dataset`
has its element spec checked up front (a floating dtype and the model's
width, like an array) and gets a map that checks every batch for NaN/Inf in
the input pipeline, so the step that would have used the batch never runs;
a Python generator is wrapped to check each batch with numpy, dtype and
width included. All of them end `fit` with the
errors of the array check: `TypeError` for a dtype, `ValueError` for a
shape, an empty input or NaN/Inf. Inputs no host check sees (a
`keras.utils.PyDataset`) are caught inside the step (`finite_step`).
"""

import contextlib
import inspect

import keras
import numpy as np

from gated_sae_layers._validation import (
    FLOAT32_MAX,
    check_floating_dtype,
    is_array_like,
    is_data_frame,
    is_floating,
    non_finite_rows,
    non_finite_rows_message,
)
from gated_sae_layers.activations.rows import check_rows, flatten_rows
from gated_sae_layers.activations.store import ActivationStore

MARKER = "gated_sae_layers: non-finite batch"


def _message(name):
    return (
        f"A batch of `{name}` contains NaN or Inf values. Training on it would "
        "turn every weight into NaN, so fit() stopped before that step; "
        "drop or repair the non-finite rows of the data."
    )


def _empty(name):
    return ValueError(
        f"`{name}` is empty: expected at least one batch of activations. "
        f"Received: a {name} that yields no batch")


def _is_tf_dataset(data):
    return type(data).__module__.startswith("tensorflow") and hasattr(
        data, "element_spec")


def _check_shape(shape, input_dim, name):
    shape = tuple(shape)
    if input_dim is None:
        return
    if len(shape) != 2 or shape[-1] not in (None, input_dim):
        raise ValueError(
            f"`{name}` must yield batches of shape (batch_size, {input_dim}) "
            f"to match the model's input_dim. Received: a batch of shape {shape}")


def _unwrap(x, input_name, name):
    """The value of a one-key dict `{input_name: value}`; `x` otherwise."""
    if not isinstance(x, dict) or input_name is None:
        return x
    if sorted(x) != [input_name]:
        raise ValueError(
            f"`{name}` as a dict must have exactly the model's input names as "
            f"keys, {[input_name]}. Received: keys {sorted(x)}")
    return x[input_name]


def check_targets(model, x, y):
    """Raises unless a transcoder gets its targets: `fit(x, y)` or `(x, y)` batches.

    A transcoder trained on `x` alone would be asked to reconstruct `x`
    (or fail on the widths); streams are checked as they flow (`guard_stream`).
    """
    if y is not None and hasattr(x, "shape") and hasattr(y, "shape") and (
            not callable(getattr(x, "element_spec", None))) and len(x) != len(y):
        raise ValueError(
            "`x` and `y` must hold the same rows (one target per input row). "
            f"Received: {len(x)} rows of x and {len(y)} rows of y")
    if y is not None or not model.is_transcoder:
        return
    if (isinstance(x, ActivationStore) or is_array_like(x) or is_data_frame(x)
            or isinstance(x, dict)):
        raise ValueError(
            f"Model '{model.name}' is a transcoder: it learns to predict targets "
            f"`y` ({model.output_dim} wide) from inputs `x` ({model.input_dim} "
            "wide). Pass both, `fit(x=inputs, y=targets)`, or a dataset of "
            "`(inputs, targets)` batches (`paired_dataset`). Received: y=None")


def reject_sample_weight(sample_weight):
    """Raises when sample weights are given: every row counts once."""
    if sample_weight is not None:
        raise ValueError(
            "SparseAutoencoder does not support sample weights: every "
            "activation row counts once in its loss terms and metrics. Drop "
            "`sample_weight`/`class_weight` (or the third element of the "
            "dataset's tuples); to weight rows, repeat or subsample them.")


def check_model_data(model, data, name, check_finite=True, targets=False):
    """`data` for `model`, checked (and unwrapped) by the one rule.

    In-memory arrays (numpy, TF, JAX, pandas) are checked whole, up front;
    a dict naming the model's input is unwrapped; an `ActivationStore` must
    match the width; streams (`tf.data`, generators) are checked batch by
    batch as they flow. A model with a `target` output takes any inputs its
    graph takes: only their floating values are checked for NaN/Inf.
    `check_finite=False` skips the host scan (the caller checks on the
    device). `targets=True` checks `y`: `output_dim` wide (a transcoder's
    target), never unwrapped.
    """
    if data is None:
        return data
    if model.target is not None:
        return check_any_inputs(data, name)
    if targets:
        if isinstance(data, ActivationStore) or is_array_like(data) or is_data_frame(data):
            return check_rows(data, model.output_dim, name)[0]
        return guard_stream(data, name)
    input_names = [tensor.name for tensor in model.inputs]
    if isinstance(data, dict) and len(input_names) != 1:
        raise ValueError(
            f"`{name}` as a dict must have exactly the model's input names as "
            f"keys, {input_names}. Received: keys {sorted(data)}")
    input_name = input_names[0]
    data = _unwrap(data, input_name, name)
    if isinstance(data, ActivationStore) or is_array_like(data) or is_data_frame(data):
        return check_rows(data, model.input_dim, name, check_finite=check_finite)[0]
    return guard_stream(data, name, model.input_dim, input_name,
                        target_dim=model.output_dim if model.is_transcoder else None)


def guard_stream(data, name, input_dim=None, input_name="activations", target_dim=None):
    """Returns `data` checked as it streams (see the module docstring).

    With `input_dim=None` (a model with a `target` output, whose inputs can
    be anything its graph takes) only floating values are checked, for
    NaN/Inf; otherwise batches must be floating, `(batch, input_dim)`, and a
    dict `{input_name: batch}` is unwrapped. With `target_dim` (a
    transcoder), batches must be `(x, y)` pairs with `y` of shape
    `(batch, target_dim)`.
    """
    if _is_tf_dataset(data):
        return _guard_dataset(data, name, input_dim, input_name, target_dim)
    if inspect.isgenerator(data):
        return _checked_generator(data, name, input_dim, input_name, target_dim)
    return data


def _check_target_shape(shape, target_dim, name):
    if target_dim is None:
        return
    if shape is None:
        raise ValueError(
            f"A transcoder trains on pairs: `{name}` must yield `(inputs, targets)` "
            f"batches, the targets of shape (batch_size, {target_dim}). Received: "
            "batches without targets")
    _check_shape(shape, target_dim, f"{name}'s targets")


def _guard_dataset(data, name, input_dim, input_name, target_dim=None):
    import tensorflow as tf

    spec = data.element_spec
    is_tuple = isinstance(spec, tuple)
    x_spec = spec[0] if is_tuple else spec
    unwrap = input_dim is not None and isinstance(x_spec, dict)
    if unwrap:
        x_spec = _unwrap(x_spec, input_name, name)
    if input_dim is not None:
        check_floating_dtype(x_spec.dtype, name)
        _check_shape(x_spec.shape, input_dim, name)
        _check_target_shape(spec[1].shape if is_tuple and len(spec) > 1 else None,
                            target_dim, name)
    if int(data.cardinality()) == 0:
        raise _empty(name)

    def check_tensor(tensor):
        if tensor.dtype.is_floating:
            return tf.debugging.check_numerics(tensor, f"{MARKER} {name}")
        return tensor

    def check(*elements):
        elements = list(elements)
        if unwrap:
            elements[0] = elements[0][input_name]
        checked = tf.nest.map_structure(check_tensor, tuple(elements))
        return checked if len(checked) > 1 else checked[0]

    return data.map(check)


def _check_batch(batch, name, input_dim, input_name, target_dim=None):
    parts = list(batch) if isinstance(batch, (tuple, list)) else [batch]
    if input_dim is not None:
        parts[0] = _unwrap(parts[0], input_name, name)
        x = parts[0]
        if is_data_frame(x):
            parts[0] = x = x.to_numpy()
        if not is_array_like(x):
            x = parts[0] = np.asarray(x)
        check_floating_dtype(x.dtype, name)
        _check_shape(x.shape, input_dim, name)
        _check_target_shape(np.shape(parts[1]) if len(parts) > 1 else None,
                            target_dim, name)
    for value in keras.tree.flatten(parts):
        if value is None or not hasattr(value, "dtype"):
            continue
        if is_floating(value.dtype) and len(non_finite_rows(
                flatten_rows(np.asarray(value), per_example=True))):
            raise ValueError(f"{MARKER} {name}: {_message(name)}")
    if input_dim is None:
        return batch
    return tuple(parts) if isinstance(batch, (tuple, list)) else parts[0]


def _checked_generator(generator, name, input_dim, input_name, target_dim=None):
    empty = True
    for batch in generator:
        empty = False
        yield _check_batch(batch, name, input_dim, input_name, target_dim)
    if empty:
        raise _empty(name)


def check_any_inputs(data, name):
    """Checks the floating values of any input structure for NaN/Inf.

    For models with a `target` output: arrays and dicts of arrays are checked
    whole, streams batch by batch; the shapes and dtypes are the graph's
    business.
    """
    if is_data_frame(data):
        data = data.to_numpy()
    if _is_tf_dataset(data) or inspect.isgenerator(data):
        return guard_stream(data, name, input_dim=None)
    for value in keras.tree.flatten(data):
        if not is_array_like(value) or not is_floating(value.dtype):
            continue
        rows = flatten_rows(np.asarray(value), per_example=True)
        bad_rows = non_finite_rows(rows, FLOAT32_MAX)
        if len(bad_rows):
            raise ValueError(non_finite_rows_message(name, bad_rows, len(rows)))
    return data


@contextlib.contextmanager
def readable_errors():
    """Turns a `MARKER` failure (from `check_numerics` or a generator) into a
    plain `ValueError`."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - re-raised unless ours
        text = str(error)
        if MARKER in text:
            name = text.split(MARKER, 1)[1].split()[0].strip(" :`'\"")
            raise ValueError(_message(name)) from None
        raise
