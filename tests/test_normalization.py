import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers.activations import ActivationStore
from gated_sae_layers.activations.normalization import estimate_norm_scale, fold_normalization
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
