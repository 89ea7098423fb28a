"""The arguments of `SparseAutoencoder.fit`, bound by name."""

import inspect

import keras

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
