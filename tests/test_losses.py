"""The six loss terms against the numpy reference (`tests/reference.py`)."""

import json

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from tests import reference as ref
from tests.reference import gated_forward, gated_losses, randomize, weights_of

_rng = np.random.default_rng(3)
X = _rng.normal(size=(6, 5)).astype("float32")
Y = _rng.normal(size=(6, 5)).astype("float32")
ACTIVE = (Y > 0).astype("float32")

# Each class: (y_true, y_pred, the numpy value of the term for a coefficient).
TERMS = {
    gsl.ReconstructionLoss: (X, Y, lambda c: ref.squared_error(X, Y)),
    gsl.SparsityPenalty: (None, Y, lambda c: ref.penalty(c, ref.relu_latents(Y))),
    gsl.AuxReconstruction: (X, Y, lambda c: c * ref.squared_error(X, Y)),
    gsl.L1Penalty: (None, Y, lambda c: ref.penalty(c, Y)),
    gsl.L0Penalty: (None, ACTIVE, lambda c: ref.penalty(c, ACTIVE)),
    gsl.AuxKLoss: (None, Y, lambda c: ref.penalty(c, Y, square=True)),
}
COEFFICIENT_TERMS = [cls for cls in TERMS if cls is not gsl.ReconstructionLoss]
SPARSITY_TERMS = (gsl.SparsityPenalty, gsl.L1Penalty, gsl.L0Penalty)


def _make(cls, coefficient, **kwargs):
    if cls is gsl.ReconstructionLoss:
        return cls(**kwargs)
    return cls(coefficient, **kwargs)


def _value(loss):
    y_true, y_pred, _ = TERMS[type(loss)]
    return float(loss(y_true, y_pred))


@pytest.mark.parametrize("cls", TERMS)
def test_value_matches_numpy_reference(cls):
    y_true, y_pred, expected = TERMS[cls]
    loss = _make(cls, 0.3)
    np.testing.assert_allclose(_value(loss), expected(0.3), rtol=1e-6)
    if y_true is None:  # A term of one output ignores any target it is given.
        np.testing.assert_allclose(float(loss(X, y_pred)), expected(0.3), rtol=1e-6)


@pytest.mark.parametrize("cls", COEFFICIENT_TERMS)
def test_coefficient_is_a_variable_that_changes_the_next_call(cls):
    loss = cls(0.3)
    assert isinstance(loss, gsl.CoefficientLoss)
    assert isinstance(loss.coefficient, keras.Variable)
    assert not loss.coefficient.trainable
    loss.set_coefficient(0.7)
    np.testing.assert_allclose(_value(loss), TERMS[cls][2](0.7), rtol=1e-6)
    loss.coefficient.assign(0.0)
    assert _value(loss) == 0.0


@pytest.mark.parametrize("cls", TERMS)
def test_config_round_trips_and_gives_the_same_value(cls):
    loss = _make(cls, 0.25, name="custom", reduction="sum")
    if cls in COEFFICIENT_TERMS:
        loss.set_coefficient(0.5)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(loss)))
    assert config["registered_name"] == f"gated_sae_layers>{cls.__name__}"
    revived = keras.saving.deserialize_keras_object(config)
    assert type(revived) is cls
    assert (revived.name, revived.reduction) == ("custom", "sum")
    if cls in COEFFICIENT_TERMS:
        assert float(revived.coefficient.numpy()) == 0.5
    assert _value(revived) == _value(loss)


@pytest.mark.parametrize("cls", TERMS)
def test_the_sparsity_terms_say_so(cls):
    is_sparsity_term = cls in SPARSITY_TERMS
    assert getattr(cls, "is_sparsity_term", False) is is_sparsity_term
    # Said by subclassing the documented base, not the gated penalty.
    assert issubclass(cls, gsl.SparsityLoss) is is_sparsity_term
    assert gsl.CoefficientLoss.is_sparsity_term is False
    assert not issubclass(gsl.L1Penalty, gsl.SparsityPenalty)
    assert not issubclass(gsl.L0Penalty, gsl.SparsityPenalty)


def test_loss_terms_match_numpy_reference():
    model = gsl.build_gated_sae(5, 11, sparsity_coefficient=0.3, aux_coefficient=0.7)
    randomize(model, seed=5)
    x = np.random.default_rng(6).normal(size=(16, 5)).astype("float32")
    expected = gated_losses(x, gated_forward(x, **weights_of(model)), 0.3, 0.7)
    model.compile(optimizer="sgd")
    logs = model.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    for name, value in expected.items():
        np.testing.assert_allclose(logs[name], value, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], sum(expected.values()), rtol=1e-5)


def test_pure_functions_and_classes_by_hand():
    x = np.array([[1.0, 2.0], [0.0, 0.0]], "float32")
    x_hat = np.array([[0.0, 0.0], [1.0, 1.0]], "float32")
    # Per example: 1 + 4 = 5 and 1 + 1 = 2; batch mean 3.5.
    np.testing.assert_allclose(gsl.ReconstructionLoss()(x, x_hat), 3.5)
    np.testing.assert_allclose(gsl.AuxReconstruction(2.0)(x, x_hat), 7.0)
    pre = np.array([[1.0, -1.0, 2.0], [-5.0, 0.5, 0.0]], "float32")
    # relu sums 3 and 0.5; mean 1.75.
    np.testing.assert_allclose(gsl.SparsityPenalty(2.0)(None, pre), 3.5)
    np.testing.assert_allclose(
        gsl.ReconstructionLoss()(x, x_hat, sample_weight=np.array([1.0, 0.0])), 2.5)


@pytest.mark.parametrize("cls", COEFFICIENT_TERMS)
@pytest.mark.parametrize("bad, error", [(-1.0, ValueError), (float("nan"), ValueError),
                                        ("0.1", TypeError)])
def test_bad_coefficients(cls, bad, error):
    with pytest.raises(error, match="coefficient"):
        cls(bad)
    with pytest.raises(error, match="coefficient"):
        cls(0.1).set_coefficient(bad)


@pytest.mark.parametrize("loss", [gsl.ReconstructionLoss(), gsl.AuxReconstruction()])
def test_shape_mismatch_is_an_error(loss):
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3\).*\(2, 4\)"):
        loss(np.ones((2, 3), "float32"), np.ones((2, 4), "float32"))
