"""The one home of every private Keras attribute the kit reads.

Keras 3 keeps some things a library needs behind underscores. Each is read
through one function here, checked against Keras 3.15, and
`tests/test_keras_compat.py` fails loudly when an upgrade moves one. The
trainer internals of the fast `fit` (`models/device_resident_fit.py`,
`models/finite_step.py`) are listed in their modules' `KERAS_INTERNALS`
and tested the same way.
"""

import keras

KERAS_VERSION_CHECKED = "3.15"


def sublayers(model):
    """Every layer inside `model`, nested models' layers included, in order."""
    return list(model._flatten_layers(include_self=False))


def output_structure(model):
    """A Functional model's outputs as it was built (a dict stays a dict)."""
    return getattr(model, "_outputs_struct", None)


def optimizer_slots(optimizer, variable):
    """The optimizer's per-variable state tensors (Adam moments, ...) for `variable`."""
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
