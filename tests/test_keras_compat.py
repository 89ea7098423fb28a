"""Fails loudly when a Keras upgrade moves a private attribute the kit reads.

Each private access has one home, `gated_sae_layers/_keras_compat.py`; the
trainer internals of the fast `fit` are listed in `KERAS_INTERNALS` of
`models/device_resident_fit.py` and `models/finite_step.py`.
"""

import keras
import numpy as np

import gated_sae_layers as gsl
from gated_sae_layers import _keras_compat
from gated_sae_layers.models import finite_step


def _model():
    model = gsl.build_gated_sae(4, 8, 1e-3)
    model.compile(optimizer="adam")
    return model


def test_sublayers_finds_nested_layers():
    inner = _model()
    outer = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), inner])
    names = [layer.name for layer in _keras_compat.sublayers(outer)]
    assert "decoder" in names and "encoder" in names


def test_output_structure_keeps_the_dict():
    structure = _keras_compat.output_structure(_model())
    assert isinstance(structure, dict) and "latents" in structure


def test_optimizer_slots_are_the_adam_moments_of_a_variable():
    model = _model()
    model.fit(np.ones((8, 4), "float32"), epochs=1, verbose=0)
    kernel = model.decoder.kernel
    slots = _keras_compat.optimizer_slots(model.optimizer, kernel)
    assert len(slots) == 2                      # Adam: first and second moment
    assert all(tuple(s.shape) == tuple(kernel.shape) for s in slots)


def test_trainer_internals_of_the_guarded_step_exist():
    model = _model()
    for name in finite_step.KERAS_INTERNALS.get(keras.backend.backend(), ()):
        assert hasattr(model, name), name
