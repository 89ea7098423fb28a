"""Argument and data checks shared by every public entry point.

Errors follow the Keras style: the argument in backticks, what was expected,
and ``Received: name=value``.
"""

import numbers
import sys

import keras
import numpy as np

# The largest float32: a coefficient or activation beyond it is Inf in the
# float32 math of every loss.
FLOAT32_MAX = float(np.finfo("float32").max)


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


def check_int_at_least(value, name, minimum):
    """Returns `value`, or raises unless it is a Python `int` >= `minimum`.

    Stricter than `check_positive_int`: a numpy integer or a bool is refused.

    Example:

    >>> check_int_at_least(3, "warmup_steps", 0)
    3
    >>> check_int_at_least(-1, "warmup_steps", 0)
    Traceback (most recent call last):
    ...
    ValueError: `warmup_steps` must be an integer >= 0. Received: warmup_steps=-1
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return value


def check_real(value, name, expected):
    """Returns `value` as a float, or raises a `TypeError` unless it is a real
    number (a bool is not one).

    Args:
        value: the argument.
        name: its name, used in the error message.
        expected: what it must be, completing "`name` must be ...", e.g.
            `"a number in [0, 1]"`.

    Example:

    >>> check_real(1, "alpha", "a number in [0, 1]")
    1.0
    >>> check_real("1", "alpha", "a number in [0, 1]")
    Traceback (most recent call last):
    ...
    TypeError: `alpha` must be a number in [0, 1]. Received: alpha='1' of type str
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be {expected}. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    return float(value)


def check_non_negative_float(value, name):
    """Returns `value` as a float, or raises if it is negative or not finite."""
    value = check_real(value, name, "a non-negative number")
    if not np.isfinite(value) or value < 0 or value > FLOAT32_MAX:
        raise ValueError(
            f"`{name}` must be a finite number >= 0 that float32 can hold "
            f"(at most {FLOAT32_MAX:.4g}). Received: {name}={value}"
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


def is_in_memory(value):
    """True for numpy arrays and eager tensors; False for symbolic ones.

    Symbolic values (a `KerasTensor` in a Functional graph, a graph tensor
    inside `tf.function`, a JAX tracer inside `jax.jit`) have no values to
    check and pass through the checks of `encode`/`decode`.
    """
    if isinstance(value, keras.KerasTensor) or not is_array_like(value):
        return False
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(value, jax.core.Tracer):
        return False
    tf = sys.modules.get("tensorflow")
    if tf is not None and tf.is_tensor(value) and not hasattr(value, "numpy"):
        return False  # a graph tensor: only eager tensors have `.numpy()`
    return True


def is_data_frame(data):
    """True for a pandas `DataFrame` or `Series` (converted with `to_numpy`)."""
    return type(data).__module__.startswith("pandas") and hasattr(data, "to_numpy")


def dtype_name(dtype):
    """The Keras name of `dtype` (`"float32"`, `"bfloat16"`, `"string"`, ...)."""
    try:
        return keras.backend.standardize_dtype(dtype)
    except (ValueError, TypeError, AttributeError):
        return str(getattr(dtype, "name", dtype))


def is_floating(dtype):
    """True for float16, bfloat16, float32 and float64 (and their aliases)."""
    try:
        return keras.backend.is_float_dtype(dtype_name(dtype))
    except ValueError:
        return False


def check_floating_dtype(dtype, name):
    """Raises `TypeError` unless `dtype` is a floating dtype (bfloat16 included)."""
    standardized = dtype_name(dtype)
    if not is_floating(standardized):
        raise TypeError(
            f"`{name}` must have a floating dtype (float16, bfloat16, float32 "
            f"or float64 activations). Received: {name}.dtype={standardized}. "
            f"Convert it first, for example `{name}.astype('float32') / 255.0` "
            "for 8-bit pixels."
        )
    return standardized


def non_finite_rows(values, limit=FLOAT32_MAX, block_rows=65536):
    """Indices of the rows of 2-D `values` holding NaN, Inf or `|v| > limit`.

    Values are compared after a cast to float32 (float64 kept as is), so a
    float64 value that would overflow to Inf in float32 counts as Inf.
    """
    bad = []
    for start in range(0, len(values), block_rows):
        block = np.asarray(values[start:start + block_rows])
        if block.dtype != np.float64:
            block = block.astype(np.float32)
        ok = (np.abs(block) <= limit).all(axis=1)
        bad.append(np.flatnonzero(~ok) + start)
    return np.concatenate(bad) if bad else np.zeros(0, "int64")


def non_finite_rows_message(name, bad_rows, num_rows):
    """The error text for NaN/Inf in rows `bad_rows` (sorted) of `name`."""
    return (
        f"`{name}` contains NaN or Inf in {len(bad_rows)} of {num_rows} "
        f"rows (first at row {bad_rows[0]}), counting values beyond "
        f"{FLOAT32_MAX:.4g} that become Inf in float32. In training they "
        "would turn every weight into NaN, in inference they would read as "
        "latents that do not fire; drop or repair those rows first."
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
        ValueError: wrong rank or width, no rows, or NaN/Inf values (after
            the cast to float32: a float64 1e300 counts as Inf).
        TypeError: a non-floating dtype.
    """
    if is_data_frame(data):
        data = data.to_numpy()
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
    check_floating_dtype(data.dtype, name)
    if not check_finite:
        return data
    bad_rows = non_finite_rows(data)
    if len(bad_rows):
        raise ValueError(non_finite_rows_message(name, bad_rows, shape[0]))
    return data


def check_floating_input(inputs, layer_name):
    """Raises a `TypeError` if a layer's input is not a floating tensor."""
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    if "float" not in dtype:
        raise TypeError(
            f"Layer '{layer_name}' expects floating-point activations. "
            f"Received: inputs.dtype={dtype}. Cast first, for example "
            "`x.astype('float32')`."
        )


def check_k(k, latent_dim, name="k"):
    """Returns `k` as an int, or raises unless `1 <= k <= latent_dim`."""
    k = check_positive_int(k, name)
    if k > latent_dim:
        raise ValueError(
            f"`{name}` must be at most `latent_dim` ({latent_dim}): it counts "
            f"latents kept out of latent_dim. Received: {name}={k}"
        )
    return k
