"""SparseAutoencoder and build_gated_sae: training, logging, faults."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import gated_sae_layers as gsl
from tests.reference import gated_forward, gated_losses, randomize, weights_of

LOGS = {"loss", "reconstruction", "sparsity", "aux", "l0", "fvu", "dead_features"}


def _data(rows=100, width=6, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, width)).astype("float32")


def _model(width=6, latent=10, lam=0.1, **kwargs):
    model = gsl.build_gated_sae(width, latent, lam, **kwargs)
    randomize(model, seed=7)
    return model


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_logs_every_term_and_metric(jit_compile):
    x = _data()
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    history = model.fit(x, epochs=2, batch_size=32, verbose=0, validation_data=(x[:20],))
    assert set(history.history) == LOGS | {f"val_{name}" for name in LOGS}
    assert all(np.isfinite(v).all() for v in history.history.values())


def test_logged_values_are_epoch_means_over_every_example():
    # lr=0 keeps the weights fixed, so the epoch's logs must equal the
    # reference on the whole data, ragged last batch (100 = 3 * 32 + 4) included.
    x = _data(rows=100)
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = {k: v[-1] for k, v in model.fit(
        x, epochs=1, batch_size=32, shuffle=False, verbose=0).history.items()}
    out = gated_forward(x, **weights_of(model))
    expected = gated_losses(x, out, 0.1, 1.0)
    for name, value in expected.items():
        np.testing.assert_allclose(logs[name], value, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], sum(expected.values()), rtol=1e-5)
    np.testing.assert_allclose(logs["l0"], (out["latents"] > 0).sum(1).mean(), rtol=1e-6)
    assert logs["dead_features"] == (out["latents"].max(0) <= 0).sum()
    fvu = ((x - out["reconstruction"]) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    np.testing.assert_allclose(logs["fvu"], fvu, rtol=1e-4)


@pytest.mark.parametrize("scale", [None, 1.0, 0.3])
def test_tied_initialization_is_the_scaled_transposed_decoder(scale):
    kwargs = {} if scale is None else {"encoder_init_scale": scale}
    w = weights_of(gsl.build_gated_sae(6, 10, 0.1, **kwargs))
    np.testing.assert_allclose(np.linalg.norm(w["W_dec"], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(w["W_gate"], (scale or 0.1) * w["W_dec"].T, rtol=1e-6)


def test_decoder_norm_weighting_matches_the_reference_and_frees_the_rows():
    """`weight_by_decoder_norm=True`: rows start at norm `encoder_init_scale` with
    `W_gate = W_dec^T`; the sparsity term is `lambda sum_j relu(pi_gate)_j ||W_dec[j]||`;
    training leaves the row norms free."""
    fresh = weights_of(gsl.build_gated_sae(6, 10, 0.1, encoder_init_scale=0.2,
                                           weight_by_decoder_norm=True))
    np.testing.assert_allclose(np.linalg.norm(fresh["W_dec"], axis=1), 0.2, rtol=1e-5)
    np.testing.assert_allclose(fresh["W_gate"], fresh["W_dec"].T, rtol=1e-6)

    x = _data(rows=64)
    model = _model(weight_by_decoder_norm=True)
    norms = np.linspace(0.2, 3.0, 10)
    model.decoder.kernel.assign(np.asarray(model.decoder.kernel) * norms[:, None])
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = {k: v[-1] for k, v in model.fit(
        x, epochs=1, batch_size=64, shuffle=False, verbose=0).history.items()}
    w = weights_of(model)
    out = gated_forward(x, **w)
    expected = gated_losses(x, out, 0.1, 1.0)
    expected["sparsity"] = 0.1 * np.mean(
        (np.maximum(out["gating_pre_activation"], 0) * norms).sum(1))
    for name, value in expected.items():
        np.testing.assert_allclose(logs[name], value, rtol=1e-5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, epochs=2, batch_size=16, verbose=0)
    trained = np.linalg.norm(np.asarray(model.decoder.kernel), axis=1)
    assert np.abs(trained - norms).max() > 1e-3   # no unit-norm projection


class _SetCoefficientAt(keras.callbacks.Callback):
    def __init__(self, batch, value):
        super().__init__()
        self.batch, self.value, self.logs = batch, value, []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.batch:
            self.model.set_sparsity_coefficient(self.value)

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(logs["sparsity"])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_set_sparsity_coefficient_mid_fit_changes_the_next_step(jit_compile):
    x = np.tile(_data(rows=16), (4, 1))  # four identical batches
    model = _model(lam=0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=jit_compile)
    callback = _SetCoefficientAt(batch=2, value=0.3)
    model.fit(x, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[callback])
    s = callback.logs[0]  # the sparsity term of one batch at lambda 0.1
    # Running means: s, s, (2s + 3s) / 3, (2s + 6s) / 4.
    np.testing.assert_allclose(callback.logs, [s, s, 5 * s / 3, 2 * s], rtol=1e-5)
    assert model.sparsity_coefficient == pytest.approx(0.3)


_COMPILED = {}


@settings(max_examples=6)
@given(st.integers(1, 6), st.floats(1e-3, 0.5))
def test_decoder_rows_stay_unit_norm_after_any_number_of_steps(steps, lr):
    # One model compiled once (an XLA compile per example would dominate);
    # each example trains it further, `steps` more steps at its own rate.
    if "model" not in _COMPILED:
        _COMPILED["model"] = _model()
        _COMPILED["model"].compile(optimizer=keras.optimizers.Adam(1e-3),
                                   jit_compile=True)
    model = _COMPILED["model"]
    model.optimizer.learning_rate.assign(lr)
    x = _data(rows=8 * steps)
    model.fit(x, epochs=1, batch_size=8, verbose=0)
    norms = np.linalg.norm(np.asarray(model.decoder.kernel, "float64"), axis=1)
    # UnitNormRows: every row with norm >= epsilon (1e-8) ends at norm 1.
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


@pytest.mark.parametrize("kind", ["array", "tf.data", "generator", "validation"])
def test_non_finite_data_stops_fit_before_any_weight_changes(kind):
    x = _data(rows=64)
    bad = x.copy()
    bad[40, 3] = np.nan
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.1))
    before = _weights(model)
    kwargs = {"verbose": 0}
    if kind == "array":
        data = bad
    elif kind == "tf.data":
        data = tf.data.Dataset.from_tensor_slices(bad).batch(16)
    elif kind == "generator":
        data = ((bad[i:i + 16],) for i in range(0, 64, 16))
    else:
        data, kwargs["validation_data"] = x, (bad,)
    message = "NaN or Inf" if kind != "array" else r"1 of 64 rows \(first at row 40\)"
    with pytest.raises(ValueError, match=message):
        model.fit(data, epochs=1, batch_size=16, **kwargs)
    after = _weights(model)
    assert all(np.isfinite(w).all() for w in after)
    if kind in ("array", "validation"):
        assert all(np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize(
    "data, error, match",
    [
        (np.ones((10, 6), "int32"), TypeError, "floating dtype.*int32"),
        (np.ones((10, 6), "uint8"), TypeError, "astype"),
        (np.ones((0, 6), "float32"), ValueError, "empty"),
        (np.ones((10, 5), "float32"), ValueError, r"6 features.*\(10, 5\)"),
        (np.ones((10, 2, 6), "float32"), ValueError, "2-D array"),
        (np.array([[np.inf] * 6], "float32"), ValueError, "NaN or Inf"),
    ],
)
def test_bad_training_data(data, error, match):
    model = _model()
    model.compile(optimizer="adam")
    with pytest.raises(error, match=match):
        model.fit(data, verbose=0)
    with pytest.raises(error, match=match):
        model.evaluate(data, verbose=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"input_dim": 0}, ValueError, "input_dim"),
        ({"latent_dim": -1}, ValueError, "latent_dim"),
        ({"sparsity_coefficient": -1e-3}, ValueError, "sparsity_coefficient"),
        ({"aux_coefficient": float("inf")}, ValueError, "aux_coefficient"),
        ({"sparsity_coefficient": None}, TypeError, "sparsity_coefficient"),
        ({"encoder_init_scale": 0.0}, ValueError, "Received: encoder_init_scale=0.0"),
        ({"encoder_init_scale": -0.1}, ValueError, "encoder_init_scale"),
        ({"encoder_init_scale": "0.1"}, TypeError, "encoder_init_scale"),
        ({"aux_trains_decoder": 1}, TypeError, "Received: aux_trains_decoder=1"),
        ({"weight_by_decoder_norm": "yes"}, TypeError, "weight_by_decoder_norm"),
        ({"weight_by_decoder_norm": True, "remove_parallel_gradient": True}, ValueError,
         "needs unit-norm decoder rows"),
    ],
)
def test_bad_hyper_parameters(kwargs, error, match):
    args = {"input_dim": 4, "latent_dim": 8, "sparsity_coefficient": 1e-3, **kwargs}
    with pytest.raises(error, match=match):
        gsl.build_gated_sae(**args)


def test_compile_rejects_a_loss():
    with pytest.raises(ValueError, match="loss_terms"):
        _model().compile(optimizer="adam", loss="mse")


def test_construction_errors():
    x = keras.Input((3,))
    y = keras.layers.Dense(3)(x)
    with pytest.raises(ValueError, match="dict of named tensors"):
        gsl.SparseAutoencoder(x, y, loss_terms={"a": gsl.ReconstructionLoss()})
    with pytest.raises(ValueError, match="unknown names"):
        gsl.SparseAutoencoder(x, {"a": y}, loss_terms={"b": gsl.ReconstructionLoss()})
    with pytest.raises(ValueError, match="at least one loss term"):
        gsl.SparseAutoencoder(x, {"a": y}, loss_terms={})
    with pytest.raises(ValueError, match="distinct names"):
        gsl.SparseAutoencoder(x, {"a": y, "b": y}, loss_terms={
            "a": gsl.ReconstructionLoss(), "b": gsl.ReconstructionLoss()})
    with pytest.raises(ValueError, match="target"):
        gsl.SparseAutoencoder(x, {"a": y}, loss_terms={"a": gsl.ReconstructionLoss()},
                              target="hidden")


def test_sae_on_the_hidden_layer_of_a_frozen_classifier():
    rng = np.random.default_rng(0)
    pixels = rng.random((128, 12)).astype("float32")
    classifier = keras.Sequential([
        keras.Input((12,)), keras.layers.Dense(8, activation="relu", name="hidden"),
        keras.layers.Dense(3, name="logits")])
    classifier.trainable = False
    frozen = [np.array(w) for w in classifier.get_weights()]

    inputs = keras.Input((12,))
    hidden = classifier.get_layer("hidden")(inputs)
    decoder = gsl.UnitNormDecoder(32, 8, name="decoder")
    encoded = gsl.GatedEncoder(32, name="encoder")(decoder(hidden, mode="center"))
    gate = keras.layers.ReLU()(encoded["gating_pre_activation"])
    model = gsl.SparseAutoencoder(
        inputs,
        {"hidden": hidden, "reconstruction": decoder(encoded["latents"]),
         "latents": encoded["latents"],
         "gating_pre_activation": encoded["gating_pre_activation"],
         "aux_reconstruction": decoder(gate, mode="frozen")},
        loss_terms={"reconstruction": gsl.ReconstructionLoss(),
                    "gating_pre_activation": gsl.SparsityPenalty(1e-3),
                    "aux_reconstruction": gsl.AuxReconstruction()},
        metric_terms={"reconstruction": [gsl.FractionOfVarianceUnexplained(8)]},
        target="hidden")
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(pixels, epochs=15, batch_size=32, verbose=0).history
    assert history["reconstruction"][-1] < 0.5 * history["reconstruction"][0]
    assert all(np.array_equal(a, b) for a, b in zip(frozen, classifier.get_weights()))
