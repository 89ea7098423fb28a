"""Fails loudly when a Keras upgrade moves a private attribute the kit uses.

Each private access has one home, `gated_sae_layers/_keras_compat.py`; each
function there is exercised here on the backend it serves (this file also
runs on the JAX leg, `-m both_backends`).
"""

import pathlib
import re

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers import _keras_compat as compat

jax_only = pytest.mark.skipif(keras.backend.backend() != "jax",
                              reason="Keras's JAX trainer")


def _model(compiled=True):
    model = gsl.build_gated_sae(4, 8, 1e-3)
    if compiled:
        model.compile(optimizer="adam")
    return model


def test_no_other_module_touches_a_private_keras_attribute():
    """Every private Keras name `_keras_compat` wraps appears nowhere else."""
    package = pathlib.Path(gsl.__file__).parent
    source = (package / "_keras_compat.py").read_text()
    private = set(re.findall(r"(?:model|optimizer|variable)\._([a-z_]+)", source))
    private |= set(re.findall(r'getattr\([a-z]+, "_([a-z_]+)"', source))
    assert {"flatten_layers", "outputs_struct", "jax_state", "value"} <= private
    names = "|".join(sorted(private))
    pattern = re.compile(r"(?:\.|getattr\([^,]+, \")_(" + names + r")\b")
    offenders = [
        f"{path.relative_to(package)}: _{match.group(1)}"
        for path in package.rglob("*.py") if path.name != "_keras_compat.py"
        for match in pattern.finditer(path.read_text())]
    assert offenders == []


def test_sublayers_finds_nested_layers():
    inner = _model()
    outer = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), inner])
    names = [layer.name for layer in compat.sublayers(outer)]
    assert "decoder" in names and "encoder" in names


def test_output_structure_keeps_the_dict():
    structure = compat.output_structure(_model())
    assert isinstance(structure, dict) and "latents" in structure


def test_optimizer_slots_are_the_adam_moments_of_a_variable():
    model = _model()
    model.fit(np.ones((8, 4), "float32"), epochs=1, verbose=0)
    kernel = model.decoder.kernel
    slots = compat.optimizer_slots(model.optimizer, kernel)
    assert len(slots) == 2                      # Adam: first and second moment
    assert all(tuple(s.shape) == tuple(kernel.shape) for s in slots)


def test_optimizer_variable_index_is_the_position_in_its_variables():
    model = _model()
    model.fit(np.ones((8, 4), "float32"), epochs=1, verbose=0)
    for position, variable in enumerate(model.trainable_variables):
        assert compat.optimizer_variable_index(model.optimizer, variable) == position


def test_trainer_internals():
    with pytest.raises(ValueError, match="compile"):
        compat.assert_compiled(_model(compiled=False), "fit")
    model = _model()
    compat.assert_compiled(model, "fit")
    compat.symbolic_build(model, (keras.KerasTensor((2, 4), "float32"),))
    assert model.optimizer.built and model.built
    assert compat.first_epoch(model, 3) == 3
    assert compat.should_evaluate(model, 1, 2) and not compat.should_evaluate(
        model, 0, 2)
    tracker = compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean) and tracker.name == "loss"
    model.fit(np.ones((8, 4), "float32"), epochs=1, verbose=0)
    step_logs = {name: -1.0 for name in model.get_metrics_result()}
    epoch_logs = compat.epoch_logs(model, step_logs)
    assert set(epoch_logs) >= {"loss", "reconstruction", "l0"}
    assert epoch_logs["loss"] != -1.0           # the epoch's mean, not the step's


@jax_only
def test_jax_state_round_trip():
    """Take the state (variables purged), hold a changed one, write it back."""
    model = _model()
    model.fit(np.ones((8, 4), "float32"), epochs=1, verbose=0)
    kernel = model.decoder.kernel
    before = np.array(kernel.value)
    assert compat.jax_variables_current(model)
    read = compat.read_jax_state(model)
    assert not compat.variable_is_purged(kernel)
    state = compat.take_jax_state(model)
    assert compat.variable_is_purged(kernel)
    compat.set_jax_variables_current(model, False)
    trainable = [v + 1.0 for v in state[0]]
    compat.hold_jax_state(model, (trainable,) + tuple(state[1:]))
    assert compat.holds_jax_state(model)
    compat.restore_jax_state(model)
    np.testing.assert_allclose(np.array(kernel.value), before + 1.0)
    compat.drop_jax_state(model)
    assert not compat.holds_jax_state(model)
    assert len(read) == 4 and len(read[0]) == len(model.trainable_variables)


@jax_only
def test_jax_update_metrics_variables_is_stateless():
    model = _model()
    model.fit(np.ones((8, 4), "float32"), epochs=1, verbose=0)
    metric_state = [v.value for v in model.metrics_variables]
    x = np.ones((2, 4), "float32")
    y_pred = model(x)
    logs, new_state = compat.update_metrics_variables(
        model, metric_state, np.float32(0.5), x, None, y_pred)
    assert "loss" in logs and len(new_state) == len(metric_state)
