import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers.activations.splice import SplicedModel, loss_recovered, spliced


def _classifier():
    keras.utils.set_random_seed(3)
    x = keras.Input((6,))
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(x)
    return keras.Model(x, keras.layers.Dense(3, name="logits")(hidden))


def _parts():
    model = _classifier()
    sae = gsl.build_gated_sae(4, 8, 0.01)
    x = np.random.default_rng(0).normal(size=(20, 6)).astype("float32")
    return model, sae, x


def test_splice_modes_match_a_hand_computation():
    model, sae, x = _parts()
    hidden = np.asarray(model.get_layer("hidden")(x))
    head = model.get_layer("logits")
    reconstruction = np.asarray(sae.predict_on_batch(hidden)["reconstruction"])
    with spliced(model, "hidden", sae, "sae"):
        np.testing.assert_allclose(model(x), head(reconstruction), rtol=1e-5, atol=1e-6)
    with spliced(model, "hidden", mode="zero"):
        np.testing.assert_allclose(model(x), head(np.zeros_like(hidden)), rtol=1e-6)
    with spliced(model, "hidden", sae, "sae", add_error=True):
        np.testing.assert_allclose(model(x), head(hidden), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(x), head(hidden), rtol=1e-6)  # restored
    np.testing.assert_allclose(SplicedModel(model, "hidden", sae)(x), head(reconstruction),
                               rtol=1e-5, atol=1e-6)


def test_loss_recovered_matches_a_hand_computation():
    model, sae, x = _parts()
    labels = np.arange(20) % 3
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                               reduction=None)
    result = loss_recovered(model, "hidden", sae, x,
                            lambda out, clean, y: cross_entropy(y, out),
                            targets=labels, batch_size=8)
    head = model.get_layer("logits")
    hidden = np.asarray(model.get_layer("hidden")(x))
    reconstruction = sae.predict_on_batch(hidden)["reconstruction"]
    expected = {
        "clean": float(np.mean(cross_entropy(labels, head(hidden)))),
        "sae": float(np.mean(cross_entropy(labels, head(reconstruction)))),
        "zero": float(np.mean(cross_entropy(labels, head(np.zeros_like(hidden))))),
    }
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-5)
    fraction = (expected["zero"] - expected["sae"]) / (expected["zero"] - expected["clean"])
    assert result["fraction_recovered"] == pytest.approx(fraction, rel=1e-5)


def test_splice_errors():
    model, sae, _ = _parts()
    with pytest.raises(ValueError, match="mode"):
        with spliced(model, "hidden", sae, "half"):
            pass
    with pytest.raises(ValueError, match="needs an `sae`"):
        with spliced(model, "hidden"):
            pass
