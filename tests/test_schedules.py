import json

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gated_sae_layers as gsl
from gated_sae_layers.schedules import WarmupStableDecay


def test_warmup_then_cosine_values():
    schedule = gsl.WarmupCosineDecay(2e-3, warmup_steps=100, total_steps=1100, alpha=0.1)
    steps = np.array([0, 50, 100, 600, 1100, 5000])
    got = np.array([float(schedule(s)) for s in steps])
    progress = np.clip((steps - 100) / 1000, 0, 1)
    cosine = 2e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))
    expected = np.where(steps < 100, 2e-3 * steps / 100, cosine)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)


def test_schedule_round_trip_and_use_in_an_optimizer():
    schedule = gsl.WarmupCosineDecay(1e-3, 5, 50, alpha=0.2)
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(schedule))))
    assert revived.get_config() == schedule.get_config()
    optimizer = keras.optimizers.Adam(schedule)
    assert float(optimizer.learning_rate) == 0.0


@pytest.mark.parametrize("args, match", [
    ((0.0, 1, 10), "peak_lr"), ((1e-3, -1, 10), "warmup_steps"),
    ((1e-3, 10, 10), "greater than"), ((1e-3, 1, 10, 2.0), "alpha"),
])
def test_schedule_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        gsl.WarmupCosineDecay(*args)


# ------------------------------------------------------------ WarmupStableDecay
def wsd_reference(steps, peak, warmup, total, decay_fraction, final):
    """numpy reference of `WarmupStableDecay`'s docstring formula."""
    steps = np.asarray(steps, "float64")
    decay_steps = int(round(decay_fraction * total))
    warm = peak * steps / max(warmup, 1)
    if decay_steps == 0:
        return np.where(steps < warmup, warm, peak)
    progress = np.clip((steps - (total - decay_steps)) / decay_steps, 0, 1)
    return np.where(steps < warmup, warm, peak * (1 - (1 - final) * progress))


def test_warmup_stable_decay_values_at_key_steps():
    schedule = WarmupStableDecay(2e-3, warmup_steps=100, total_steps=1100,
                                 decay_fraction=0.2, final_lr_fraction=0.1)
    # warm-up, its end, plateau, decay start (880), mid-decay, end, after.
    steps = np.array([0, 50, 99, 100, 500, 879, 880, 990, 1100, 5000])
    got = np.array([float(schedule(s)) for s in steps])
    expected = wsd_reference(steps, 2e-3, 100, 1100, 0.2, 0.1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(got[[3, 4, 6, 7, 8]], [2e-3, 2e-3, 2e-3, 1.1e-3, 2e-4],
                               rtol=1e-6)


def test_warmup_stable_decay_without_decay_is_constant_after_warmup():
    schedule = WarmupStableDecay(1e-3, warmup_steps=0, total_steps=10, decay_fraction=0.0)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 9, 10, 10**6)],
                               [1e-3] * 4, rtol=1e-6)


@given(peak=st.floats(1e-6, 1.0), warmup=st.integers(0, 50), stable=st.integers(0, 50),
       decay=st.integers(0, 50), final=st.floats(0.0, 1.0))
def test_warmup_stable_decay_is_bounded_and_monotone_by_piece(
        peak, warmup, stable, decay, final):
    total = warmup + stable + decay + 1
    fraction = decay / total
    schedule = WarmupStableDecay(peak, warmup, total, fraction, final)
    steps = np.arange(160)      # one shape for every example: no retracing on JAX
    lr = np.asarray(schedule(steps), "float64")
    np.testing.assert_allclose(
        lr, wsd_reference(steps, peak, warmup, total, fraction, final),
        rtol=1e-5, atol=1e-12)
    assert np.all(lr >= 0) and np.all(lr <= peak * (1 + 1e-6))
    tol = peak * 1e-6
    assert np.all(np.diff(lr[:warmup + 1]) >= -tol)          # warm-up rises
    assert np.all(np.diff(lr[warmup:]) <= tol)               # then never rises
    np.testing.assert_allclose(lr[total:], peak * (final if decay else 1.0),
                               rtol=1e-5, atol=peak * 1e-7)


def test_warmup_stable_decay_round_trip_and_compiled_optimizer_steps():
    schedule = WarmupStableDecay(1e-2, 2, 10, decay_fraction=0.3, final_lr_fraction=0.5)
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(schedule))))
    assert type(revived) is WarmupStableDecay
    assert revived.get_config() == schedule.get_config()
    # SGD on the loss -w (gradient -1): step t adds lr(t) to w, in a compiled step.
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=keras.optimizers.SGD(revived), loss=lambda y, p: -keras.ops.mean(p),
                  jit_compile=True)
    model.layers[0].kernel.assign([[0.0]])
    model.fit(np.ones((10, 1), "float32"), np.zeros((10, 1), "float32"),
              batch_size=1, epochs=1, verbose=0, shuffle=False)
    expected = wsd_reference(np.arange(10), 1e-2, 2, 10, 0.3, 0.5).sum()
    np.testing.assert_allclose(float(model.layers[0].kernel[0, 0]), expected, rtol=1e-5)


@pytest.mark.parametrize("args, error, match", [
    ((0.0, 1, 10), ValueError, "peak_lr"),
    ((1e-3, -1, 10), ValueError, "warmup_steps"),
    ((1e-3, 10, 10), ValueError, "greater than"),
    ((1e-3, 1, 10, 1.0), ValueError, "decay_fraction=1.0"),
    ((1e-3, 1, 10, -0.1), ValueError, "decay_fraction=-0.1"),
    ((1e-3, 1, 10, "0.1"), TypeError, "decay_fraction='0.1'"),
    ((1e-3, 8, 10, 0.5), ValueError, "before the warm-up ends"),
    ((1e-3, 1, 10, 0.2, 1.5), ValueError, "final_lr_fraction=1.5"),
    ((1e-3, 1, 10, 0.2, True), TypeError, "final_lr_fraction=True"),
])
def test_warmup_stable_decay_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        WarmupStableDecay(*args)
