import json

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gated_sae_layers as gsl


def _in_batches(metric, y_true, y_pred, sizes):
    start = 0
    for size in sizes:
        metric.update_state(y_true[start:start + size], y_pred[start:start + size])
        start += size
    return float(metric.result())


@st.composite
def split_data(draw, width):
    rows = draw(st.integers(2, 40))
    # Subnormal floats are excluded: TF flushes them to zero on CPU.
    values = st.floats(-4, 4, width=32, allow_subnormal=False)
    a = draw(hnp.arrays("float32", (rows, width), elements=values))
    b = draw(hnp.arrays("float32", (rows, width), elements=values))
    cuts = sorted(draw(st.lists(st.integers(1, rows - 1), max_size=4, unique=True)))
    sizes = np.diff([0, *cuts, rows]).tolist()
    return a, b, sizes


@given(split_data(width=5))
def test_l0_and_dead_features_are_exact_across_batches(data):
    _, latents, sizes = data
    latents = np.maximum(latents, 0)
    metric = gsl.L0()
    start = 0
    for size in sizes:
        metric.update_state(None, latents[start:start + size])
        start += size
    np.testing.assert_allclose(float(metric.result()), (latents > 0).sum(1).mean(), rtol=1e-6)
    dead = gsl.DeadFeatures(5)
    start = 0
    for size in sizes:
        dead.update_state(None, latents[start:start + size])
        start += size
    assert float(dead.result()) == float((latents.max(0) <= 0).sum())


@given(split_data(width=4))
def test_fvu_and_shrinkage_are_exact_across_batches(data):
    x, x_hat, sizes = data
    x64, x_hat64 = x.astype("float64"), x_hat.astype("float64")
    total_variance = ((x64 - x64.mean(0)) ** 2).sum()
    if total_variance > 1e-3:
        expected = ((x64 - x_hat64) ** 2).sum() / total_variance
        got = _in_batches(gsl.FractionOfVarianceUnexplained(4), x, x_hat, sizes)
        np.testing.assert_allclose(got, expected, rtol=1e-3)
    cross = (x64 * x_hat64).sum()
    if abs(cross) > 1e-2:
        got = _in_batches(gsl.RelativeReconstructionBias(), x, x_hat, sizes)
        np.testing.assert_allclose(got, (x_hat64 ** 2).sum() / cross, rtol=1e-3)


def test_fvu_is_accurate_with_a_large_common_offset():
    rng = np.random.default_rng(0)
    x = (1000.0 + rng.normal(size=(512, 8))).astype("float32")
    x_hat = (x + 0.1 * rng.normal(size=x.shape)).astype("float32")
    expected = ((x - x_hat.astype("float64")) ** 2).sum() / (
        (x.astype("float64") - x.mean(0)) ** 2).sum()
    got = _in_batches(gsl.FractionOfVarianceUnexplained(8), x, x_hat, [128] * 4)
    np.testing.assert_allclose(got, expected, rtol=1e-3)


def test_sample_weights_and_reset():
    metric = gsl.L0()
    metric.update_state(None, np.array([[1.0, 1.0], [0.0, 0.0]]), sample_weight=[1.0, 0.0])
    assert float(metric.result()) == 2.0
    metric.reset_state()
    assert float(metric.result()) == 0.0
    dead = gsl.DeadFeatures(2)
    dead.update_state(None, np.array([[1.0, 1.0]]), sample_weight=[0.0])
    assert float(dead.result()) == 2.0


@pytest.mark.parametrize("metric", [
    gsl.L0(name="my_l0"), gsl.DeadFeatures(7, name="dead"),
    gsl.FractionOfVarianceUnexplained(3, name="unexplained"),
    gsl.RelativeReconstructionBias(name="gamma"),
])
def test_metric_round_trip(metric):
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(metric)))
    revived = keras.saving.deserialize_keras_object(config)
    assert type(revived) is type(metric) and revived.get_config() == metric.get_config()


def test_metric_bad_arguments():
    with pytest.raises(ValueError, match="input_dim"):
        gsl.FractionOfVarianceUnexplained(0)
    with pytest.raises(TypeError, match="latent_dim"):
        gsl.DeadFeatures(None)
