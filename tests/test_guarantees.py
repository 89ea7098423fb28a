"""What the kit promises on bad input and interrupted training (docs/guarantees.md).

Each test is a reproducer from a hostile-input audit, or a stronger property.
Runs on TensorFlow and, on the JAX leg (`-m both_backends`), on JAX; the
stock Keras loop and (on JAX) the device-resident one.
"""

import os
import re

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import gated_sae_layers as gsl
from gated_sae_layers.evaluation.analysis import encode_all

WIDTH, LATENT = 6, 12
IS_JAX = keras.backend.backend() == "jax"
# The loops `fit` can take: on JAX in-memory arrays train device-resident
# unless told otherwise.
LOOPS = [False, True] if IS_JAX else [False]
# Checks made on the host before any step are the same on every backend:
# they run once, on TensorFlow (the suite's time budget is tight).
host_check = pytest.mark.skipif(
    IS_JAX, reason="a host-side check, the same on every backend; runs on TF")


def _data(rows=64, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, WIDTH)).astype("float32")


def _model(**kwargs):
    keras.utils.set_random_seed(3)
    model = gsl.build_gated_sae(WIDTH, LATENT, 1e-2, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _assert_same(a, b):
    assert len(a) == len(b)
    for left, right in zip(a, b):
        np.testing.assert_allclose(left, right, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------- a warm-up cut short
def test_a_failed_fit_puts_the_warmup_target_back():
    bad = _data(256)
    bad[200, 0] = np.nan
    model = _model()
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.fit(((bad[i:i + 16],) for i in range(0, 256, 16)), epochs=1,
                  verbose=0, callbacks=[gsl.SparsityWarmup(40)])
    assert abs(model.sparsity_coefficient - 1e-2) < 1e-9


class _Killed(Exception):
    pass


class _KillAt(keras.callbacks.Callback):
    """Stops training abruptly before optimizer step `step`."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_begin(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            raise _Killed()


def _warmup_run(backup, order, kill_at=None):
    """A fresh model, as in a new process, trained with a warm-up and backups."""
    model = _model()
    restore = keras.callbacks.BackupAndRestore(str(backup))   # every epoch
    warmup = gsl.SparsityWarmup(20)
    callbacks = [restore, warmup] if order == "restore_first" else [warmup, restore]
    if kill_at is not None:
        callbacks.append(_KillAt(kill_at))
    model.fit(_data(96), epochs=3, batch_size=16, shuffle=False, verbose=0,
              callbacks=callbacks)
    return model


@pytest.mark.parametrize("order", [
    "restore_first",
    pytest.param("warmup_first", marks=host_check)])   # the order that failed
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, order):
    """Killed mid-ramp, resumed by `BackupAndRestore` into a fresh model (as a
    new process would): same coefficient and weights as a run never
    interrupted, in either callback order."""
    with pytest.raises(_Killed):
        _warmup_run(tmp_path / "backup", order, kill_at=9)   # epoch 2 of the ramp
    assert (tmp_path / "backup").exists()
    resumed = _warmup_run(tmp_path / "backup", order)
    plain = _warmup_run(tmp_path / "plain", order)
    assert resumed.sparsity_coefficient == pytest.approx(1e-2, abs=1e-9)
    for got, expected in zip(_weights(resumed), _weights(plain)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------- sample weights
def test_sample_weights_are_refused_not_ignored():
    x, model = _data(32), _model()
    before = _weights(model)
    for kwargs in ({"sample_weight": np.ones(32)}, {"class_weight": {0: 1.0}}):
        with pytest.raises(ValueError, match="sample weights"):
            model.fit(x, epochs=1, verbose=0, **kwargs)
    with pytest.raises(ValueError, match="sample weights"):
        model.evaluate(x, sample_weight=np.ones(32), verbose=0)
    weighted = tf.data.Dataset.from_tensor_slices((x, x, np.ones(32))).batch(8)
    with pytest.raises(ValueError, match="sample weights"):
        model.fit(weighted, epochs=1, verbose=0)
    _assert_same(before, _weights(model))


# ------------------------------- every way past the non-finite data check
class _Batches(keras.utils.PyDataset):
    def __init__(self, x):
        super().__init__()
        self.x = x

    def __len__(self):
        return len(self.x) // 16

    def __getitem__(self, index):
        return (self.x[index * 16:(index + 1) * 16],)


def _bad(value, row=40):
    x = _data(64).astype("float64")
    x[row, 2] = value
    return x


@host_check
@pytest.mark.parametrize("data", [
    pytest.param(lambda: _bad(1e300), id="float64-overflows-float32"),
    pytest.param(lambda: pd.DataFrame(_bad(np.nan)), id="pandas"),
    pytest.param(lambda: {"activations": _bad(np.inf)}, id="dict"),
])
def test_non_finite_after_the_cast_is_refused_up_front(data):
    model = _model()
    before = _weights(model)
    with pytest.raises(ValueError, match=r"1 of 64 rows \(first at row 40\)"):
        model.fit(data(), epochs=1, batch_size=16, verbose=0)
    _assert_same(before, _weights(model))


@pytest.mark.parametrize("device_resident", LOOPS)
@pytest.mark.parametrize("value", [1e19, -3e38])
def test_a_finite_row_whose_loss_overflows_stops_fit_at_that_step(
        value, device_resident):
    """The step holding the row changes nothing; the weights are those of a
    run on exactly the batches before it."""
    bad = _bad(value).astype("float32")
    reference = _model()
    reference.fit(bad[:32], epochs=1, batch_size=16, shuffle=False, verbose=0,
                  device_resident=device_resident)
    model = _model()
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.fit(bad, epochs=1, batch_size=16, shuffle=False, verbose=0,
                  device_resident=device_resident)
    _assert_same(_weights(reference), _weights(model))


def test_a_py_dataset_batch_with_nan_stops_fit_at_that_step():
    bad = _bad(np.nan).astype("float32")
    reference = _model()
    reference.fit(_Batches(bad[:32]), epochs=1, shuffle=False, verbose=0)
    model = _model()
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.fit(_Batches(bad), epochs=2, shuffle=False, verbose=0)
    _assert_same(_weights(reference), _weights(model))


@host_check
def test_a_model_with_a_target_output_checks_its_inputs():
    inputs = keras.Input((4,), name="pixels")
    hidden = keras.layers.Dense(WIDTH, name="hidden", trainable=False)(inputs)
    sae = gsl.build_gated_sae(WIDTH, LATENT, 1e-2)
    outputs = {**sae(hidden), "hidden": hidden}
    model = gsl.SparseAutoencoder(inputs, outputs, loss_terms=sae.loss_terms,
                                  target="hidden")
    model.compile(optimizer="adam")
    x = np.ones((32, 4), "float32")
    x[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"first at row 5"):
        model.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.fit(((x[i:i + 8],) for i in range(0, 32, 8)), epochs=1, verbose=0)


@host_check
def test_a_coefficient_float32_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="float32"):
        gsl.build_gated_sae(WIDTH, LATENT, 1e39)
    with pytest.raises(ValueError, match="float32"):
        _model().set_sparsity_coefficient(1e39)


# ---------------------------------------------------------- predictions
@host_check
def test_predict_refuses_a_nan_row_instead_of_reporting_no_latents():
    x = _data(8)
    x[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"first at row 3"):
        _model().predict(x, verbose=0)
    with pytest.raises(ValueError, match=r"first at row 3"):
        encode_all(_model(), x)


# --------------------------------------- one rule for every input path
def _int_generator():
    for _ in range(2):
        yield (np.ones((8, WIDTH), "int32"),)


@host_check
@pytest.mark.parametrize("data, error, match", [
    (lambda: tf.data.Dataset.from_tensor_slices(np.ones((16, WIDTH), "int32")).batch(8),
     TypeError, "floating dtype.*int32"),
    (_int_generator, TypeError, "floating dtype.*int32"),
    (lambda: tf.data.Dataset.from_tensor_slices(
        np.full((16, WIDTH), "a")).batch(8), TypeError, "floating dtype.*string"),
    (lambda: np.full((16, WIDTH), "a"), TypeError, "floating dtype"),
    (lambda: tf.data.Dataset.from_tensor_slices(np.ones((0, WIDTH), "float32")).batch(8),
     ValueError, "empty"),
    (lambda: (b for b in ()), ValueError, "empty"),
    (lambda: tf.data.Dataset.from_tensor_slices(np.ones((16, 3), "float32")).batch(8),
     ValueError, rf"\(batch_size, {WIDTH}\)"),
    (lambda: {"pixels": _data(16)}, ValueError, "input names"),
])
def test_every_input_path_gives_the_same_errors(data, error, match):
    model = _model()
    with pytest.raises(error, match=match):
        model.fit(data(), epochs=1, verbose=0)


@host_check
def test_bfloat16_and_dict_inputs_train():
    import ml_dtypes

    model = _model()
    history = model.fit(_data(32).astype(ml_dtypes.bfloat16), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    history = model.fit({"activations": _data(32)}, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@host_check
def test_every_guarantee_names_tests_that_exist():
    """Every guarantee of docs/guarantees.md names tests that exist."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "guarantees.md")) as handle:
        text = handle.read()
    lines = text.split("\n* ")[1:]
    assert len(lines) >= 10, text[:300]
    for line in lines:
        cited = re.findall(r"`tests/([\w/]+\.py)::(\w+)", line)
        assert cited, f"a guarantee without a test: {line[:120]}"
        for path, name in cited:
            with open(os.path.join(root, "tests", path)) as handle:
                assert f"def {name}(" in handle.read(), f"{path}::{name}"
