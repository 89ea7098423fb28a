"""`UnitNormDecoder`: harness in each mode, numpy references, shapes, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gated_sae_layers as gsl
from tests.harness import DTYPE_POLICIES, run_layer_test


@pytest.mark.parametrize("dtype_policy", DTYPE_POLICIES)
@pytest.mark.parametrize("mode, use_bias", [("decode", True), ("frozen", True),
                                            ("center", True), ("decode", False)])
def test_unit_norm_decoder_harness(mode, use_bias, dtype_policy):
    width = 4 if mode == "center" else 9
    x = np.random.default_rng(1).normal(size=(5, width)).astype("float32")
    layer = run_layer_test(
        gsl.UnitNormDecoder,
        {"latent_dim": 9, "output_dim": 4, "remove_parallel_gradient": True,
         "kernel_initializer": "he_normal", "bias_initializer": "ones"},
        x, call_kwargs={"mode": mode, "use_bias": use_bias}, expected_output_shape=(5, 4),
        expect_weight_updates=mode != "frozen", dtype_policy=dtype_policy,
        # The kernel and the bias, in every mode (`frozen` only stops gradients).
        expected_num_trainable_weights=2, expected_num_non_trainable_weights=0)
    assert isinstance(layer.kernel_constraint, gsl.UnitNormRows)


def _decoder_with(kernel, bias):
    decoder = gsl.UnitNormDecoder(*np.shape(kernel), kernel_constraint=None)
    decoder.build()
    decoder.kernel.assign(np.asarray(kernel, "float32"))
    decoder.bias.assign(np.asarray(bias, "float32"))
    return decoder


def test_decoding_and_row_norms_match_numpy():
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(5, 3)), rng.normal(size=3)
    decoder = _decoder_with(kernel, bias)
    f = rng.random((4, 5)).astype("float32")
    np.testing.assert_allclose(decoder.row_norms(), np.linalg.norm(kernel, axis=1),
                               rtol=1e-6)
    for mode in ("decode", "frozen"):
        np.testing.assert_allclose(decoder(f, mode=mode), f @ kernel + bias,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(decoder(f, mode=mode, use_bias=False), f @ kernel,
                                   rtol=1e-5, atol=1e-6)
    x = rng.normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(decoder(x, mode="center"), x - bias, rtol=1e-6, atol=1e-6)


def test_decoder_modes_share_one_bias():
    decoder = gsl.UnitNormDecoder(3, 2, bias_initializer="zeros")
    decoder.build()
    decoder.bias.assign([1.0, -2.0])
    x = np.array([[5.0, 5.0]], "float32")
    np.testing.assert_allclose(decoder(x, mode="center"), [[4.0, 7.0]])
    f = np.array([[1.0, 0.0, 0.0]], "float32")
    expected = np.asarray(decoder.kernel)[0] + [1.0, -2.0]
    np.testing.assert_allclose(decoder(f), [expected], rtol=1e-6)
    np.testing.assert_allclose(decoder(f, mode="frozen"), [expected], rtol=1e-6)


@given(st.integers(1, 7), st.integers(1, 6), st.integers(1, 10), st.integers(1, 4))
def test_decoder_shapes_for_any_batch_and_width(batch, tokens, latent_dim, output_dim):
    decoder = gsl.UnitNormDecoder(latent_dim, output_dim)
    f = np.ones((batch, tokens, latent_dim), "float32")
    assert tuple(decoder(f).shape) == (batch, tokens, output_dim)
    assert tuple(decoder(f, use_bias=False).shape) == (batch, tokens, output_dim)
    x = np.ones((batch, output_dim), "float32")
    assert tuple(decoder(x, mode="center").shape) == (batch, output_dim)
    np.testing.assert_allclose(decoder.row_norms(), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"latent_dim": 4, "output_dim": 0}, ValueError, "output_dim"),
        ({"latent_dim": "4", "output_dim": 2}, TypeError, "latent_dim"),
        ({"latent_dim": 4, "output_dim": 2, "remove_parallel_gradient": "yes"},
         TypeError, "remove_parallel_gradient"),
    ],
)
def test_decoder_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        gsl.UnitNormDecoder(**kwargs)


def test_decoder_bad_inputs():
    decoder = gsl.UnitNormDecoder(4, 3)
    with pytest.raises(ValueError, match=r"mode='decode' expects inputs of shape \(\.\.\., 4\)"):
        decoder(np.ones((2, 3), "float32"))
    with pytest.raises(ValueError, match=r"mode='center' expects inputs of shape \(\.\.\., 3\)"):
        decoder(np.ones((2, 4), "float32"), mode="center")
    with pytest.raises(ValueError, match=r"`mode` must be one of \('decode', 'frozen', "
                                         r"'center'\). Received: mode='encode'"):
        decoder(np.ones((2, 4), "float32"), mode="encode")
    with pytest.raises(ValueError, match="Received: mode='scale_by_row_norm'"):
        decoder(np.ones((2, 4), "float32"), mode="scale_by_row_norm")  # removed
    with pytest.raises(TypeError, match="floating-point"):
        decoder(np.ones((2, 4), "int64"))
    with pytest.raises(TypeError, match="`use_bias` must be a bool. Received: use_bias=0"):
        decoder(np.ones((2, 4), "float32"), use_bias=0)
    with pytest.raises(ValueError, match="decoding only.*Received: mode='center'"):
        decoder(np.ones((2, 3), "float32"), mode="center", use_bias=False)
