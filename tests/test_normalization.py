import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers.activations import ActivationStore
from gated_sae_layers.activations.normalization import estimate_norm_scale, geometric_median
from gated_sae_layers.models.folding import fold_normalization
from tests.reference import randomize


def test_scale_makes_the_mean_squared_norm_input_dim(tmp_path):
    x = (50.0 * np.random.default_rng(0).normal(size=(400, 8))).astype("float32")
    scale = estimate_norm_scale(x)
    np.testing.assert_allclose(((scale * x.astype("float64")) ** 2).sum(1).mean(), 8.0,
                               rtol=1e-6)
    store = ActivationStore.create(tmp_path, 8, dtype="float32", shard_rows=100)
    store.append(x)
    store.close()
    assert estimate_norm_scale(ActivationStore.open(tmp_path)) == pytest.approx(scale)
    assert estimate_norm_scale(x, sample_rows=100) == pytest.approx(scale, rel=0.2)
    with pytest.raises(ValueError, match="all zero"):
        estimate_norm_scale(np.zeros((4, 8), "float32"))


def test_folding_gives_the_same_reconstructions_on_raw_activations(tmp_path):
    raw = (30.0 + 50.0 * np.random.default_rng(1).normal(size=(64, 6))).astype("float32")
    scale = estimate_norm_scale(raw)
    model = gsl.build_gated_sae(6, 16, 0.01)
    randomize(model, seed=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(scale * raw, epochs=1, batch_size=16, verbose=0)
    model.normalization_scale = scale
    model.save(tmp_path / "normalized.keras")  # the scale is stored with the SAE
    reloaded = keras.saving.load_model(tmp_path / "normalized.keras")
    assert reloaded.normalization_scale == pytest.approx(scale)
    folded = fold_normalization(reloaded)
    assert folded.normalization_scale is None
    normalized_out = model.predict_on_batch(scale * raw)
    raw_out = folded.predict_on_batch(raw)
    np.testing.assert_allclose(raw_out["reconstruction"],
                               normalized_out["reconstruction"] / scale, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(raw_out["latents"], normalized_out["latents"],
                               rtol=1e-4, atol=1e-5)
    # The exported model round-trips too.
    folded.save(tmp_path / "raw.keras")
    reloaded = keras.saving.load_model(tmp_path / "raw.keras")
    np.testing.assert_allclose(reloaded.predict_on_batch(raw)["reconstruction"],
                               raw_out["reconstruction"], rtol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        fold_normalization(model, -1.0)
    with pytest.raises(ValueError, match="normalization_scale"):
        fold_normalization(folded)


@pytest.mark.parametrize("build", [
    lambda: gsl.build_gated_sae(6, 8, 0.01),
    lambda: gsl.GatedSAE(input_dim=6, encoding_dim=8),
], ids=["build_gated_sae", "GatedSAE"])
def test_folded_decoder_has_no_unit_norm_constraint(build):
    folded = fold_normalization(build(), 2.0)
    kernel = folded.decoder.kernel
    np.testing.assert_allclose(np.linalg.norm(np.asarray(kernel), axis=1), 0.5, rtol=1e-6)
    assert folded.decoder.kernel_constraint is None and kernel.constraint is None
    # A step that changes nothing, so only a constraint could move the rows.
    variables = folded.trainable_variables
    keras.optimizers.SGD(0.0).apply([np.zeros(v.shape, "float32") for v in variables],
                                    variables)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(kernel), axis=1), 0.5, rtol=1e-6)


def _distance_sum(points, center):
    return np.linalg.norm(points - center, axis=1).sum()


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(
    hnp.arrays("float64", st.tuples(st.integers(1, 12), st.integers(1, 4)),
               elements=st.floats(-100, 100)),
    st.integers(0, 2**16))
def test_geometric_median_minimizes_the_sum_of_distances(points, seed):
    """No nearby point, the mean or any data point has a smaller distance sum."""
    median = geometric_median(points)
    best = _distance_sum(points, median)
    slack = 1e-6 * (1.0 + best)
    candidates = [points.mean(axis=0), *points]
    rng = np.random.default_rng(seed)
    candidates += [median + rng.normal(scale=0.01, size=median.shape) for _ in range(8)]
    for candidate in candidates:
        assert best <= _distance_sum(points, candidate) + slack


def test_decoder_bias_starts_at_the_center_of_the_data(tmp_path):
    rng = np.random.default_rng(3)
    x = (5.0 + rng.normal(size=(300, 6))).astype("float32")
    x[:3] = 1e4                                    # outlying rows
    model = gsl.build_gated_sae(6, 16, 0.01)
    center = model.initialize_decoder_bias(x)
    np.testing.assert_allclose(np.array(model.decoder.bias), center)
    np.testing.assert_allclose(center, 5.0, atol=0.3)  # the mean is ~105
    mean = model.initialize_decoder_bias(x, method="mean")
    np.testing.assert_allclose(mean, x.astype("float64").mean(axis=0), rtol=1e-6)
    store = ActivationStore.create(tmp_path, 6, dtype="float32", shard_rows=100)
    store.append(x)
    store.close()
    np.testing.assert_allclose(
        model.initialize_decoder_bias(ActivationStore.open(tmp_path), method="mean"),
        mean, rtol=1e-6)
    before = np.array(model.decoder.bias)
    bad = x.copy()
    bad[7, 2] = np.nan
    for data, error, match in [(x[:, :5], ValueError, "6"), (bad, ValueError, "NaN"),
                               (x[:0], ValueError, "empty|at least one"),
                               (x.astype("int32"), TypeError, "float")]:
        with pytest.raises(error, match=match):
            model.initialize_decoder_bias(data)
    with pytest.raises(ValueError, match="method"):
        model.initialize_decoder_bias(x, method="median")
    np.testing.assert_array_equal(np.array(model.decoder.bias), before)
