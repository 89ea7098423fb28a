"""The body of `SparseAutoencoder.fit`: check the arguments and data, pick the loop."""

import contextlib

from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.activations.store import ActivationStore
from gated_sae_layers.activations.stream import store_dataset
from gated_sae_layers.models import input_rule
from gated_sae_layers.models._fit import device_resident, finite_step
from gated_sae_layers.models._fit.arguments import (
    RESIDENT_FIT_ARGUMENTS,
    bind_fit_arguments,
    check_fit_arguments,
)
from gated_sae_layers.models._fit.recovery import (
    keep_weights_on_error,
    tell_callbacks_on_error,
)
from gated_sae_layers.models.sparse_path import cap as sparse_cap


def _check_validation_data(model, validation_data):
    if isinstance(validation_data, (tuple, list)):
        return tuple(input_rule.check_model_data(model, v, "validation_data",
                                                 targets=index == 1)
                     for index, v in enumerate(validation_data))
    return input_rule.check_model_data(model, validation_data, "validation_data")


def _choose_loop(model, x, y, arguments, device_resident_option):
    """True for the device-resident loop, False for Keras's stock loop."""
    if device_resident_option not in ("auto", True, False):
        raise ValueError(
            "`device_resident` must be 'auto', True or False. "
            f"Received: device_resident={device_resident_option!r}")
    if device_resident_option is False:
        return False
    reason = device_resident.unsupported_reason(model, x, y, arguments)
    if reason is not None and device_resident_option is True:
        raise ValueError(
            f"fit(device_resident=True) cannot run here: {reason}. Use "
            "device_resident='auto' to fall back to the stock Keras loop.")
    return reason is None


@contextlib.contextmanager
def linked_callbacks(callbacks):
    """Lets callbacks that act together see each other for one `fit`: each
    with `link_callbacks(callbacks)` is called with the list, and its
    `unlink_callbacks()` when `fit` ends (`TargetL0` takes over the ramp of
    a `SparsityWarmup`)."""
    linking = [c for c in callbacks if callable(getattr(c, "link_callbacks", None))]
    try:
        for callback in linking:
            callback.link_callbacks(callbacks)
        yield
    finally:
        for callback in linking:
            callback.unlink_callbacks()


def run_fit(model, stock_fit, x, y, args, kwargs, validation_data,
            device_resident_option, device_chunk_rows):
    """`model.fit(x, y, *args, **kwargs)`; `stock_fit` is `keras.Model.fit`
    bound to the model."""
    if device_chunk_rows is not None:
        device_chunk_rows = check_positive_int(device_chunk_rows, "device_chunk_rows")
    arguments = bind_fit_arguments(args, kwargs)
    for weights in ("sample_weight", "class_weight"):
        input_rule.reject_sample_weight(arguments.get(weights))
    # One check for every loop, before one is chosen (issue 20).
    arguments = check_fit_arguments(model, x, arguments, validation_data)
    resident = _choose_loop(model, x, y, arguments, device_resident_option)
    input_rule.check_targets(model, x, y)
    x = input_rule.check_model_data(model, x, "x", check_finite=not resident)
    y = input_rule.check_model_data(model, y, "y", targets=True)
    validation_data = _check_validation_data(model, validation_data)
    sparse_cap.calibrate(model, x, arguments.get("batch_size") or 32)
    if isinstance(x, ActivationStore) and not resident:
        x = store_dataset(x, arguments.pop("batch_size", None) or 32,
                          shuffle_buffer=16384 if arguments.get(
                              "shuffle", True) else 1)
    callbacks = list(arguments.pop("callbacks", None) or [])
    if not resident:
        callbacks.append(finite_step.NonFiniteLossGuard())
    plan = model.sparse_plan
    if plan is not None and plan.cap_is_auto and not plan.fixed:
        callbacks.append(sparse_cap.SparseCapTuner())
    with input_rule.readable_errors(), linked_callbacks(callbacks), \
            keep_weights_on_error(model, callbacks), \
            tell_callbacks_on_error(callbacks):
        if resident:
            return device_resident.device_resident_fit(
                model, x, y, validation_data=validation_data, callbacks=callbacks,
                device_chunk_rows=device_chunk_rows,
                **{name: value for name, value in arguments.items()
                   if name in RESIDENT_FIT_ARGUMENTS})
        return stock_fit(x, y, validation_data=validation_data,
                         callbacks=callbacks, **arguments)
