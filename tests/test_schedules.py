import json

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl


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
