import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gated_sae_layers as gsl
from tests.harness import DTYPE_POLICIES, run_layer_test
from tests.reference import gated_forward, randomize, weights_of


@pytest.mark.parametrize("dtype_policy", DTYPE_POLICIES)
def test_gated_encoder_harness(dtype_policy):
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    run_layer_test(
        gsl.GatedEncoder,
        {"latent_dim": 7, "kernel_initializer": "he_normal",
         "bias_initializer": keras.initializers.Constant(0.1)},
        x,
        expected_output_shape={"latents": (6, 7), "gating_pre_activation": (6, 7)},
        dtype_policy=dtype_policy,
    )


@pytest.mark.parametrize("dtype_policy", DTYPE_POLICIES)
@pytest.mark.parametrize("mode", ["decode", "frozen", "center"])
def test_unit_norm_decoder_harness(mode, dtype_policy):
    width = 4 if mode == "center" else 9
    x = np.random.default_rng(1).normal(size=(5, width)).astype("float32")
    layer = run_layer_test(
        gsl.UnitNormDecoder,
        {"latent_dim": 9, "output_dim": 4, "remove_parallel_gradient": True,
         "kernel_initializer": "he_normal", "bias_initializer": "ones"},
        x, call_kwargs={"mode": mode}, expected_output_shape=(5, 4),
        expect_weight_updates=mode != "frozen", dtype_policy=dtype_policy)
    assert isinstance(layer.kernel_constraint, gsl.UnitNormRows)


@pytest.mark.parametrize("dtype_policy", DTYPE_POLICIES)
def test_unit_norm_decoder_scale_by_row_norm_harness(dtype_policy):
    # Free rows: the norm's gradient is parallel to each row, which the
    # unit-norm constraint would undo.
    x = np.random.default_rng(2).random((5, 9)).astype("float32")
    run_layer_test(
        gsl.UnitNormDecoder,
        {"latent_dim": 9, "output_dim": 4, "kernel_constraint": None},
        x, call_kwargs={"mode": "scale_by_row_norm"}, expected_output_shape=(5, 9),
        dtype_policy=dtype_policy)


def test_forward_matches_numpy_reference():
    model = gsl.build_gated_sae(6, 12, sparsity_coefficient=0.1)
    randomize(model, seed=3)
    x = np.random.default_rng(4).normal(size=(32, 6)).astype("float32")
    expected = gated_forward(x, **weights_of(model))
    outputs = model.predict_on_batch(x)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-5)
    # The random weights exercise both sides of the gate.
    assert 0 < (expected["latents"] > 0).mean() < 1


def test_hand_set_weights_give_exact_outputs():
    encoder = gsl.GatedEncoder(2)
    encoder.build((None, 2))
    encoder.gate_kernel.assign([[1.0, 0.0], [0.0, 1.0]])
    encoder.gate_bias.assign([0.0, -1.0])
    encoder.magnitude_log_scale.assign([np.log(2.0), 0.0])
    encoder.magnitude_bias.assign([-1.0, 5.0])
    out = encoder(np.array([[3.0, 0.5], [-1.0, 2.0]], "float32"))
    # Row 0: pi_gate = [3, -0.5] -> gate [1, 0]; f_mag = relu([6-1, 0.5+5]).
    # Row 1: pi_gate = [-1, 1]   -> gate [0, 1]; f_mag = relu([-3, 7]).
    np.testing.assert_allclose(out["gating_pre_activation"], [[3.0, -0.5], [-1.0, 1.0]])
    np.testing.assert_allclose(out["latents"], [[5.0, 0.0], [0.0, 7.0]])


@st.composite
def encoder_case(draw):
    batch = draw(st.integers(1, 9))
    input_dim = draw(st.integers(1, 8))
    latent_dim = draw(st.integers(1, 16))
    elements = st.floats(-3, 3, width=32, allow_subnormal=False)
    x = draw(hnp.arrays("float32", (batch, input_dim), elements=elements))
    seed = draw(st.integers(0, 2**16))
    return x, latent_dim, seed


@given(encoder_case())
def test_gate_semantics_and_shapes(case):
    x, latent_dim, seed = case
    encoder = gsl.GatedEncoder(latent_dim)
    encoder.build(x.shape)
    rng = np.random.default_rng(seed)
    for variable in encoder.weights:
        variable.assign(rng.normal(0, 1, tuple(variable.shape)).astype("float32"))
    out = encoder(x)
    latents = np.asarray(out["latents"])
    pre = np.asarray(out["gating_pre_activation"])
    assert latents.shape == pre.shape == (x.shape[0], latent_dim)
    assert np.all(latents >= 0)
    assert np.all(latents[pre <= 0] == 0)


@given(st.integers(1, 7), st.integers(1, 6), st.integers(1, 10), st.integers(1, 4))
def test_decoder_shapes_for_any_batch_and_width(batch, tokens, latent_dim, output_dim):
    decoder = gsl.UnitNormDecoder(latent_dim, output_dim)
    f = np.ones((batch, tokens, latent_dim), "float32")
    assert tuple(decoder(f).shape) == (batch, tokens, output_dim)
    x = np.ones((batch, output_dim), "float32")
    assert tuple(decoder(x, mode="center").shape) == (batch, output_dim)
    norms = np.linalg.norm(np.asarray(decoder.kernel), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)


def test_encoder_accepts_token_axis():
    encoder = gsl.GatedEncoder(8)
    out = encoder(np.ones((2, 3, 4), "float32"))
    assert tuple(out["latents"].shape) == (2, 3, 8)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"latent_dim": 0}, ValueError, "latent_dim"),
        ({"latent_dim": -3}, ValueError, "Received: latent_dim=-3"),
        ({"latent_dim": 2.5}, TypeError, "positive integer"),
        ({"latent_dim": True}, TypeError, "positive integer"),
    ],
)
def test_encoder_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        gsl.GatedEncoder(**kwargs)


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


def test_encoder_bad_inputs():
    encoder = gsl.GatedEncoder(4)
    encoder(np.ones((2, 3), "float32"))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 3"):
        encoder(np.ones((2, 5), "float32"))
    with pytest.raises(ValueError, match="ndim"):
        encoder(np.ones((3,), "float32"))
    with pytest.raises(TypeError, match="floating-point.*int32"):
        encoder(np.ones((2, 3), "int32"))


def test_decoder_bad_inputs():
    decoder = gsl.UnitNormDecoder(4, 3)
    with pytest.raises(ValueError, match=r"mode='decode' expects inputs of shape \(\.\.\., 4\)"):
        decoder(np.ones((2, 3), "float32"))
    with pytest.raises(ValueError, match=r"mode='center' expects inputs of shape \(\.\.\., 3\)"):
        decoder(np.ones((2, 4), "float32"), mode="center")
    with pytest.raises(ValueError, match="`mode` must be one of"):
        decoder(np.ones((2, 4), "float32"), mode="encode")
    with pytest.raises(TypeError, match="floating-point"):
        decoder(np.ones((2, 4), "int64"))


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
