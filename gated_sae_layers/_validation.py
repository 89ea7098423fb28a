"""Argument and data checks shared by every public entry point.

Errors follow the Keras style: the argument in backticks, what was expected,
and ``Received: name=value``.
"""

import numbers

import numpy as np


def check_positive_int(value, name):
    """Returns `value` as an int, or raises if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be a positive integer. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value}"
        )
    return int(value)


def check_non_negative_float(value, name):
    """Returns `value` as a float, or raises if it is negative or not finite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a non-negative number. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a finite number >= 0. Received: {name}={value}"
        )
    return value


def check_positive_float(value, name):
    """Returns `value` as a float, or raises if it is not strictly positive."""
    value = check_non_negative_float(value, name)
    if value == 0:
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value}")
    return value


def is_array_like(data):
    """True for in-memory arrays (numpy, TF, JAX tensors), not for datasets."""
    return hasattr(data, "shape") and hasattr(data, "dtype") and not callable(
        getattr(data, "element_spec", None)
    )


def non_finite_rows_message(name, bad_rows, num_rows):
    """The error text for NaN/Inf in rows `bad_rows` (sorted) of `name`."""
    return (
        f"`{name}` contains NaN or Inf in {len(bad_rows)} of {num_rows} "
        f"rows (first at row {bad_rows[0]}). Training on them would turn "
        "every weight into NaN; drop or repair those rows first."
    )


def check_activations(data, input_dim=None, name="x", check_finite=True):
    """Checks a 2-D float array of activations before any work is done.

    Args:
        data: array-like of shape `(num_examples, input_dim)`.
        input_dim: the expected feature width, or `None` to accept any.
        name: the argument's name, used in error messages.
        check_finite: whether to scan the values for NaN/Inf on the host
            (`False` where the caller checks them on the device).

    Returns:
        `data` unchanged.

    Raises:
        ValueError: wrong rank or width, no rows, or NaN/Inf values.
        TypeError: a non-floating dtype.
    """
    shape = tuple(data.shape)
    expected = f"(num_examples, {input_dim if input_dim else 'input_dim'})"
    if len(shape) != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array of activations of shape {expected}. "
            f"Received: {name}.shape={shape}"
        )
    if input_dim is not None and shape[1] != input_dim:
        raise ValueError(
            f"`{name}` must have {input_dim} features (last axis) to match the "
            f"model's input_dim. Received: {name}.shape={shape}"
        )
    if shape[0] == 0:
        raise ValueError(
            f"`{name}` is empty: expected at least one row of shape {expected}. "
            f"Received: {name}.shape={shape}"
        )
    dtype = np.dtype(str(getattr(data.dtype, "name", data.dtype)))
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(
            f"`{name}` must have a floating dtype (float16/32/64 activations). "
            f"Received: {name}.dtype={dtype.name}. Convert it first, for "
            f"example `{name}.astype('float32') / 255.0` for 8-bit pixels."
        )
    if not check_finite:
        return data
    finite = np.isfinite(np.asarray(data))
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(non_finite_rows_message(name, bad_rows, shape[0]))
    return data
