"""Stops non-finite batches of streamed data before they reach a train step.

In-memory arrays are checked whole, up front (`check_activations`). Streams
cannot be: a `tf.data.Dataset` gets a `check_numerics` map (run in the input
pipeline, so the step that would have used the batch never runs), a Python
generator is wrapped to check each batch with numpy. Both end `fit` with the
same `ValueError`. Other inputs (a `keras.utils.PyDataset`) pass through
unchecked.
"""

import contextlib
import inspect

import numpy as np

MARKER = "gated_sae_layers: non-finite batch"


def _message(name):
    return (
        f"A batch of `{name}` contains NaN or Inf values. Training on it would "
        "turn every weight into NaN, so fit() stopped before that step; "
        "drop or repair the non-finite rows of the data."
    )


def _is_tf_dataset(data):
    return type(data).__module__.startswith("tensorflow") and hasattr(
        data, "element_spec")


def guard_stream(data, name):
    """Returns `data` wrapped so that a non-finite batch raises `ValueError`."""
    if _is_tf_dataset(data):
        import tensorflow as tf

        def check(*elements):
            def check_tensor(tensor):
                if tensor.dtype.is_floating:
                    return tf.debugging.check_numerics(tensor, f"{MARKER} {name}")
                return tensor

            checked = tf.nest.map_structure(check_tensor, elements)
            return checked if len(checked) > 1 else checked[0]

        return data.map(check)
    if inspect.isgenerator(data):
        return _checked_generator(data, name)
    return data


def _checked_generator(generator, name):
    for batch in generator:
        parts = batch if isinstance(batch, (tuple, list)) else (batch,)
        for part in parts:
            if part is None:
                continue
            values = np.asarray(part)
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(
                    values).all():
                raise ValueError(f"{MARKER} {name}: {_message(name)}")
        yield batch


@contextlib.contextmanager
def readable_errors():
    """Turns the dataset's `check_numerics` failure into a `ValueError`."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - re-raised unless ours
        text = str(error)
        if MARKER in text:
            name = text.split(MARKER, 1)[1].split()[0].strip(" :`'\"")
            raise ValueError(_message(name)) from None
        raise
