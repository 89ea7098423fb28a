import json

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from tests.reference import gated_forward, gated_losses, randomize, weights_of


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


@pytest.mark.parametrize("cls", [gsl.SparsityPenalty, gsl.AuxReconstruction])
def test_coefficient_is_a_variable_and_round_trips(cls):
    loss = cls(0.25, name="custom")
    assert isinstance(loss.coefficient, keras.Variable)
    assert not loss.coefficient.trainable
    loss.set_coefficient(0.5)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(loss)))
    revived = keras.saving.deserialize_keras_object(config)
    assert type(revived) is cls and revived.name == "custom"
    assert float(revived.coefficient.numpy()) == 0.5


@pytest.mark.parametrize("cls", [gsl.SparsityPenalty, gsl.AuxReconstruction])
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
