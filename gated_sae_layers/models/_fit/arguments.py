"""`SparseAutoencoder.fit`'s arguments: bound by name, checked alike for every loop."""

import inspect
import math
import numbers

import keras

from gated_sae_layers._validation import is_array_like, is_data_frame

FIT_PARAMETERS = [
    name for name in inspect.signature(keras.Model.fit).parameters
    if name not in ("self", "x", "y")]


def bind_fit_arguments(args, kwargs):
    """`fit`'s arguments after `x, y`, positional or not, as one dict."""
    if len(args) > len(FIT_PARAMETERS):
        raise TypeError(
            f"fit() takes at most {len(FIT_PARAMETERS) + 2} positional "
            f"arguments. Received: {len(args) + 2}")
    arguments = dict(zip(FIT_PARAMETERS, args))
    for name, value in kwargs.items():
        if name not in FIT_PARAMETERS:
            raise TypeError(
                f"fit() got an unexpected keyword argument '{name}'. It takes "
                f"{FIT_PARAMETERS + ['device_resident', 'device_chunk_rows']}")
        if name in arguments:
            raise TypeError(f"fit() got multiple values for argument '{name}'")
        arguments[name] = value
    return arguments


# The `keras.Model.fit` arguments the device-resident path takes (the others
# must be unset for it to run).
RESIDENT_FIT_ARGUMENTS = ("batch_size", "epochs", "verbose", "validation_split",
                          "shuffle", "initial_epoch", "validation_batch_size",
                          "validation_freq")


def _integer(value, name, minimum, expected, allow_none=False, label=None):
    """`value` as an int, or raises unless it is an integer >= `minimum`
    (or `None` where `allow_none`); `label` names it in the message."""
    if value is None and allow_none:
        return None
    label = label or f"`{name}`"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{label} must be {expected}. "
                        f"Received: {name}={value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{label} must be {expected}. Received: {name}={value!r}")
    return int(value)


def check_steps_per_execution(value):
    """`compile`'s `steps_per_execution` as an int, or raises unless it is >= 1."""
    return _integer(value, "steps_per_execution", 1, "a positive integer",
                    label="`steps_per_execution` (of `compile`)")


def _keras_split_message(num_rows, validation_split):
    # Keras's own text: `keras/src/trainers/data_adapters/array_slicing.py`,
    # `train_validation_split` (the stock loop raises it too).
    return (
        f"Training data contains {num_rows} samples, which is not "
        "sufficient to split it into a validation and training set as "
        f"specified by `validation_split={validation_split}`. Either "
        "provide more data, or a different value for the "
        "`validation_split` argument.")


def check_validation_split(validation_split, x, validation_data):
    """Raises unless `validation_split` is a number in `[0, 1]` that, where
    it applies (an in-memory `x`, no `validation_data`), leaves rows on both
    sides of the split."""
    if validation_split is None:
        return validation_split
    expected = ("a number from 0 to 1 (the fraction of the rows held out for "
                "validation)")
    if isinstance(validation_split, bool) or not isinstance(
            validation_split, numbers.Real):
        raise TypeError(
            f"`validation_split` must be {expected}. Received: validation_split="
            f"{validation_split!r} of type {type(validation_split).__name__}")
    if not 0.0 <= float(validation_split) <= 1.0:  # NaN fails too
        raise ValueError(f"`validation_split` must be {expected}. "
                         f"Received: validation_split={validation_split!r}")
    if validation_split and validation_data is None and (
            is_array_like(x) or is_data_frame(x)):
        num_rows = int(x.shape[0])
        split_at = int(math.floor(num_rows * (1.0 - validation_split)))
        if split_at == 0 or split_at == num_rows:
            raise ValueError(_keras_split_message(num_rows, validation_split))
    return validation_split


def check_fit_arguments(model, x, arguments, validation_data):
    """Checks `fit`'s loop arguments for every loop alike, before one is chosen.

    `arguments` is `bind_fit_arguments`'s dict; returns it with the integer
    arguments as Python ints. Checked: `batch_size` and
    `validation_batch_size` (a positive int or `None`), `epochs` and
    `initial_epoch` (ints >= 0), `validation_split` (`check_validation_split`)
    and the compiled `model.steps_per_execution` (`check_steps_per_execution`).
    Keras's stock loop took some of these (`batch_size=0`, a negative
    `validation_split` or `steps_per_execution`) or refused them in a
    backend's words; the device-resident loop took them all.
    """
    arguments = dict(arguments)
    for name in ("batch_size", "validation_batch_size"):
        if name in arguments:
            arguments[name] = _integer(arguments[name], name, 1,
                                       "a positive integer or None", allow_none=True)
    for name in ("epochs", "initial_epoch"):
        if name in arguments:
            arguments[name] = _integer(arguments[name], name, 0, "an integer >= 0")
    if "validation_split" in arguments:
        check_validation_split(arguments["validation_split"], x, validation_data)
    check_steps_per_execution(getattr(model, "steps_per_execution", 1))
    return arguments
