"""The weightless layers the builders wire around the encoder and the decoder.

`PrefixMask` (Matryoshka), `AuxKResidual` (AuxK loss) and
`DecoderNormWeighting` (the norm-weighted L1 of the ReLU SAE).
"""

import json

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from tests.harness import DTYPE_POLICIES, dtype_policy_scope, run_layer_test


@pytest.mark.parametrize("dtype_policy", DTYPE_POLICIES)
def test_prefix_mask_harness(dtype_policy):
    x = np.random.default_rng(1).normal(size=(5, 7)).astype("float32")
    layer = run_layer_test(gsl.PrefixMask, {"size": 3, "name": "prefix"}, x,
                           expected_output_shape=(5, 7), expect_weight_updates=False,
                           dtype_policy=dtype_policy, expected_num_trainable_weights=0,
                           expected_num_non_trainable_weights=0)
    out = np.asarray(layer(x))
    np.testing.assert_array_equal(out[:, :3], x[:, :3].astype(out.dtype))
    assert np.all(out[:, 3:] == 0)


@pytest.mark.parametrize("dtype_policy", DTYPE_POLICIES)
def test_auxk_residual_harness(dtype_policy):
    rng = np.random.default_rng(3)
    x, x_hat, e_hat = (rng.normal(size=(6, 4)).astype("float32") for _ in range(3))
    z_aux = np.maximum(rng.normal(size=(6, 9)), 0).astype("float32")
    z_aux[0] = 0.0  # a row without AuxK latents gives 0
    layer = run_layer_test(gsl.AuxKResidual, {"name": "aux"}, [x, x_hat, e_hat, z_aux],
                           expected_output_shape=(6, 4), expect_weight_updates=False,
                           dtype_policy=dtype_policy, expected_num_trainable_weights=0,
                           expected_num_non_trainable_weights=0)
    assert np.all(np.asarray(layer([x, x_hat, e_hat, z_aux]))[0] == 0)


def test_auxk_residual_config_and_symbolic_call():
    layer = gsl.AuxKResidual(name="aux")
    config = json.loads(json.dumps(layer.get_config()))
    assert gsl.AuxKResidual.from_config(config).get_config() == layer.get_config()
    inputs = [keras.KerasTensor((None, 4)), keras.KerasTensor((None, 4)),
              keras.KerasTensor((None, 4)), keras.KerasTensor((None, 9))]
    assert tuple(layer(inputs).shape) == (None, 4)


def _weighting_model(dtype=None):
    """A decoder and its `DecoderNormWeighting` in one Functional model."""
    latents = keras.Input((5,), name="latents")
    decoder = gsl.UnitNormDecoder(5, 3, kernel_constraint=None, name="decoder",
                                  dtype=dtype)
    weighting = gsl.DecoderNormWeighting(decoder, name="weighting", dtype=dtype)
    model = keras.Model(latents, {"reconstruction": decoder(latents),
                                  "weighted": weighting(latents)})
    rng = np.random.default_rng(0)
    decoder.kernel.assign(rng.normal(size=(5, 3)).astype("float32"))
    return model, decoder, weighting


@pytest.mark.parametrize("dtype_policy", DTYPE_POLICIES)
def test_decoder_norm_weighting_matches_numpy_and_keeps_its_decoder(dtype_policy, tmp_path):
    with dtype_policy_scope(dtype_policy):
        model, decoder, weighting = _weighting_model()
        f = np.random.default_rng(1).random((4, 5)).astype("float32")
        out = model.predict_on_batch(f)["weighted"]
        assert keras.backend.standardize_dtype(out.dtype) == weighting.compute_dtype
        expected = f * np.linalg.norm(np.asarray(decoder.kernel), axis=1)
        np.testing.assert_allclose(np.asarray(out, "float32"), expected,
                                   rtol=1e-2 if dtype_policy != "float32" else 1e-6)
        assert weighting.weights == []  # the decoder's weights are the model's
        model.save(tmp_path / "weighting.keras")
        loaded = keras.saving.load_model(tmp_path / "weighting.keras")
        assert loaded.get_layer("weighting").decoder is loaded.get_layer("decoder")
        np.testing.assert_array_equal(loaded.predict_on_batch(f)["weighted"], out)


def test_decoder_norm_weighting_outside_keras_saving_needs_its_decoder_set():
    model, _, weighting = _weighting_model()
    config = json.loads(json.dumps(model.get_config()))
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    f = np.ones((2, 5), "float32")
    with pytest.raises(ValueError, match="has no decoder.*layer.decoder = model.decoder"):
        copy.get_layer("weighting")(f)
    # The unlinked copy still serializes as it was read.
    assert copy.get_layer("weighting").get_config() == json.loads(
        json.dumps(weighting.get_config()))
    copy.get_layer("weighting").decoder = copy.get_layer("decoder")
    np.testing.assert_allclose(copy.predict_on_batch(f)["weighted"],
                               model.predict_on_batch(f)["weighted"], rtol=1e-6)


def test_decoder_norm_weighting_bad_arguments():
    with pytest.raises(TypeError, match="`decoder` must be a `UnitNormDecoder`.*Dense"):
        gsl.DecoderNormWeighting(keras.layers.Dense(3))
    weighting = gsl.DecoderNormWeighting(gsl.UnitNormDecoder(3, 2))
    with pytest.raises(TypeError, match="floating-point"):
        weighting(np.ones((2, 3), "int32"))
