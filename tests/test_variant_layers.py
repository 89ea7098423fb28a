"""The variant encoders, PrefixMask and AuxKResidual: harness, properties, gradients."""

import json

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import ops

from gated_sae_layers.layers.auxk_residual import AuxKResidual
from gated_sae_layers.layers.batch_topk_encoder import BatchTopKEncoder
from gated_sae_layers.layers.jumprelu_encoder import JumpReLUEncoder, jump_relu, step
from gated_sae_layers.layers.prefix_mask import PrefixMask
from gated_sae_layers.layers.relu_encoder import ReLUEncoder
from gated_sae_layers.layers.topk_encoder import TopKEncoder
from gated_sae_layers.layers.unit_norm_decoder import UnitNormDecoder
from gated_sae_layers.variant_losses import AuxKLoss
from tests.backend_grad import gradients
from tests.harness import DTYPE_POLICIES, run_layer_test

TOL = 1e-4

HARNESS_CASES = [
    (ReLUEncoder, {"latent_dim": 7, "kernel_initializer": "he_normal",
                   "bias_initializer": keras.initializers.Constant(0.1)}, ("latents",)),
    (TopKEncoder, {"latent_dim": 7, "k": 3, "k_aux": 2, "dead_steps_threshold": 5,
                   "kernel_initializer": "he_normal"}, ("latents", "aux_latents")),
    (BatchTopKEncoder, {"latent_dim": 7, "k": 2, "k_aux": 3, "dead_steps_threshold": 4,
                        "threshold_momentum": 0.9, "bias_initializer": "ones"},
     ("latents", "aux_latents")),
    (JumpReLUEncoder, {"latent_dim": 7, "initial_threshold": 0.01, "bandwidth": 0.05,
                       "kernel_initializer": "he_normal"}, ("latents", "active_latents")),
]


@pytest.mark.parametrize("dtype_policy", DTYPE_POLICIES)
@pytest.mark.parametrize("layer_cls, kwargs, names", HARNESS_CASES,
                         ids=[c[0].__name__ for c in HARNESS_CASES])
def test_encoder_harness(layer_cls, kwargs, names, dtype_policy):
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    layer = run_layer_test(layer_cls, kwargs, x,
                           expected_output_shape={name: (6, 7) for name in names},
                           dtype_policy=dtype_policy)
    if hasattr(layer, "steps_since_fired"):  # the dead-latent counter stays int32
        assert layer.steps_since_fired.dtype == "int32"


@pytest.mark.parametrize("dtype_policy", DTYPE_POLICIES)
def test_prefix_mask_harness(dtype_policy):
    x = np.random.default_rng(1).normal(size=(5, 7)).astype("float32")
    layer = run_layer_test(PrefixMask, {"size": 3, "name": "prefix"}, x,
                           expected_output_shape=(5, 7), expect_weight_updates=False,
                           dtype_policy=dtype_policy)
    out = np.asarray(layer(x))
    np.testing.assert_array_equal(out[:, :3], x[:, :3].astype(out.dtype))
    assert np.all(out[:, 3:] == 0)


@pytest.mark.parametrize("dtype_policy", DTYPE_POLICIES)
def test_auxk_residual_harness(dtype_policy):
    rng = np.random.default_rng(3)
    x, x_hat, e_hat = (rng.normal(size=(6, 4)).astype("float32") for _ in range(3))
    z_aux = np.maximum(rng.normal(size=(6, 9)), 0).astype("float32")
    z_aux[0] = 0.0  # a row without AuxK latents gives 0
    layer = run_layer_test(AuxKResidual, {"name": "aux"}, [x, x_hat, e_hat, z_aux],
                           expected_output_shape=(6, 4), expect_weight_updates=False,
                           dtype_policy=dtype_policy)
    assert np.all(np.asarray(layer([x, x_hat, e_hat, z_aux]))[0] == 0)


def test_auxk_residual_config_and_symbolic_call():
    layer = AuxKResidual(name="aux")
    config = json.loads(json.dumps(layer.get_config()))
    assert AuxKResidual.from_config(config).get_config() == layer.get_config()
    inputs = [keras.KerasTensor((None, 4)), keras.KerasTensor((None, 4)),
              keras.KerasTensor((None, 4)), keras.KerasTensor((None, 9))]
    assert tuple(layer(inputs).shape) == (None, 4)


def _random_weights(layer, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    for variable in layer.trainable_weights:
        variable.assign(rng.normal(0, scale, tuple(variable.shape)).astype("float32"))


def _z(layer, x):
    return x.astype("float64") @ np.asarray(layer.kernel, "float64") + np.asarray(
        layer.bias, "float64")


@st.composite
def encoder_case(draw):
    batch = draw(st.integers(1, 9))
    input_dim = draw(st.integers(1, 8))
    latent_dim = draw(st.integers(1, 16))
    k = draw(st.integers(1, latent_dim))
    elements = st.floats(-3, 3, width=32, allow_subnormal=False)
    x = draw(hnp.arrays("float32", (batch, input_dim), elements=elements))
    return x, latent_dim, k, draw(st.integers(0, 2**16))


def _check_top(kept_values, dropped_values):
    if kept_values.size and dropped_values.size:
        assert kept_values.min() >= dropped_values.max() - TOL


@settings(max_examples=12)
@given(encoder_case())
def test_topk_keeps_the_k_largest(case):
    x, latent_dim, k, seed = case
    encoder = TopKEncoder(latent_dim, k)
    encoder.build(x.shape)
    _random_weights(encoder, seed)
    latents = np.asarray(encoder(x)["latents"])
    z = _z(encoder, x)
    assert latents.shape == (x.shape[0], latent_dim)
    assert np.all(latents >= 0)
    nonzero = latents > 0
    assert np.all(nonzero.sum(1) <= k)
    assert np.all(nonzero.sum(1) >= np.minimum(k, (z > TOL).sum(1)))
    np.testing.assert_allclose(latents[nonzero], z[nonzero], rtol=TOL, atol=TOL)
    for row in range(len(x)):
        _check_top(z[row][nonzero[row]], z[row][~nonzero[row]])


@settings(max_examples=8)
@given(encoder_case(), st.floats(0.01, 2.0))
def test_batch_topk_training_budget_and_jumprelu_inference(case, threshold):
    x, latent_dim, k, seed = case
    encoder = BatchTopKEncoder(latent_dim, k)
    encoder.build(x.shape)
    _random_weights(encoder, seed)
    a = np.maximum(_z(encoder, x), 0.0)
    latents = np.asarray(encoder(x, training=True)["latents"])
    nonzero = latents > 0
    assert nonzero.sum() <= x.shape[0] * k
    assert nonzero.sum() >= min(x.shape[0] * k, (a > TOL).sum())
    np.testing.assert_allclose(latents[nonzero], a[nonzero], rtol=TOL, atol=TOL)
    _check_top(a[nonzero], a[~nonzero])
    if nonzero.any():  # the first batch sets the threshold to its smallest kept value
        np.testing.assert_allclose(float(encoder.threshold), latents[nonzero].min(),
                                   rtol=1e-6)
    encoder.threshold.assign(threshold)
    inference = np.asarray(encoder(x, training=False)["latents"])
    clear = np.abs(a - threshold) > TOL
    expected = np.where(a > threshold, a, 0.0)
    np.testing.assert_allclose(inference[clear], expected[clear], rtol=TOL, atol=TOL)


@settings(max_examples=12)
@given(encoder_case())
def test_jumprelu_zero_below_threshold_identity_above(case):
    x, latent_dim, _, seed = case
    encoder = JumpReLUEncoder(latent_dim)
    encoder.build(x.shape)
    _random_weights(encoder, seed)
    out = encoder(x)
    latents, active = np.asarray(out["latents"]), np.asarray(out["active_latents"])
    z, theta = _z(encoder, x), np.asarray(encoder.threshold, "float64")
    assert latents.shape == active.shape == (x.shape[0], latent_dim)
    clear = np.abs(z - theta) > TOL
    assert np.all(latents[clear & (z <= theta)] == 0)
    np.testing.assert_allclose(latents[clear & (z > theta)], z[clear & (z > theta)],
                               rtol=TOL, atol=TOL)
    np.testing.assert_array_equal(active[clear], (z > theta)[clear])


@pytest.mark.parametrize("batch, tokens, latent_dim", [(1, 1, 1), (3, 4, 12), (5, 2, 7)])
def test_encoders_accept_any_batch_and_token_axis(batch, tokens, latent_dim):
    x = np.random.default_rng(batch).normal(size=(batch, tokens, 3)).astype("float32")
    k = min(2, latent_dim)
    for encoder in (ReLUEncoder(latent_dim), TopKEncoder(latent_dim, k),
                    JumpReLUEncoder(latent_dim)):
        out = encoder(x)
        assert {tuple(v.shape) for v in out.values()} == {(batch, tokens, latent_dim)}
    latents = np.asarray(BatchTopKEncoder(latent_dim, k)(x, training=True)["latents"])
    assert (latents > 0).sum() <= batch * tokens * k


# ------------------------------------------------------------------ gradients
EPS = 0.1
Z = np.array([[0.42, 0.52, -1.0], [0.56, 2.0, 0.3], [0.5, 0.62, 0.33]], "float32")
THETA = np.array([0.5, 0.55, 0.3], "float32")
W = np.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0], [0.25, 2.0, 4.0]], "float32")


def _rect(u):
    return (np.abs(u) < 0.5).astype("float64")


def test_jumprelu_pseudo_derivatives_match_the_paper():
    z, theta = keras.Variable(Z), keras.Variable(THETA)
    dz, dtheta = gradients(lambda: ops.sum(W * jump_relu(z, theta, EPS)), [z, theta])
    window = _rect((Z - THETA) / EPS)
    assert 0 < window.sum() < window.size  # both sides of the window are exercised
    np.testing.assert_allclose(dz, W * (Z > THETA), rtol=1e-6)
    np.testing.assert_allclose(dtheta, (W * -(THETA / EPS) * window).sum(0), rtol=1e-5)


def test_step_pseudo_derivative_and_no_gradient_to_z():
    z, theta = keras.Variable(Z), keras.Variable(THETA)
    dz, dtheta = gradients(lambda: ops.sum(W * step(z, theta, EPS)), [z, theta])
    assert np.all(dz == 0)
    window = _rect((Z - THETA) / EPS)
    np.testing.assert_allclose(dtheta, (W * -(1.0 / EPS) * window).sum(0), rtol=1e-5)


def test_l0_term_trains_only_the_threshold_through_log_threshold():
    encoder = JumpReLUEncoder(3, bandwidth=EPS)
    encoder.build((None, 3))
    encoder.kernel.assign(np.eye(3, dtype="float32"))
    encoder.log_threshold.assign(np.log(THETA))
    grads = gradients(lambda: ops.sum(encoder(Z)["active_latents"]),
                      [encoder.kernel, encoder.bias, encoder.log_threshold])
    assert np.all(grads[0] == 0) and np.all(grads[1] == 0)
    expected = THETA * (-(1.0 / EPS) * _rect((Z - THETA) / EPS)).sum(0)  # chain rule
    np.testing.assert_allclose(grads[2], expected, rtol=1e-5)


def test_decoding_without_b_dec_gives_b_dec_exactly_zero_gradient():
    decoder = UnitNormDecoder(4, 3)
    decoder.build()
    decoder.bias.assign([1.0, -2.0, 0.5])
    a = np.random.default_rng(0).random((5, 4)).astype("float32")
    w = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
    d_kernel, d_bias = gradients(
        lambda: ops.sum(w * decoder(decoder(a), mode="center")),
        [decoder.kernel, decoder.bias])
    assert np.all(d_bias == 0)
    np.testing.assert_allclose(d_kernel, a.T @ w, rtol=1e-5)
    np.testing.assert_allclose(decoder(decoder(a), mode="center"),
                               a @ np.asarray(decoder.kernel), atol=1e-6)


def test_auxk_loss_trains_only_dead_latents():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 4)).astype("float32")
    encoder, decoder = TopKEncoder(6, k=2, k_aux=2, dead_steps_threshold=3), \
        UnitNormDecoder(6, 4)
    encoder.build(x.shape)
    decoder.build()
    encoder.steps_since_fired.assign([0, 5, 0, 3, 1, 0])  # latents 1 and 3 are dead
    residual_layer, loss = AuxKResidual(), AuxKLoss(1.0)

    def aux_loss():
        out = encoder(decoder(x, mode="center"))
        reconstruction = decoder(out["latents"])
        residual = residual_layer([x, reconstruction,
                                   decoder(decoder(out["aux_latents"]), mode="center"),
                                   out["aux_latents"]])
        return loss(None, residual)

    d_enc, d_dec = gradients(aux_loss, [encoder.kernel, decoder.kernel])
    live = [0, 2, 4, 5]
    # x_hat is detached and live latents are masked out: no gradient reaches them.
    assert np.all(d_enc[:, live] == 0) and np.all(d_dec[live] == 0)
    assert np.abs(d_enc[:, [1, 3]]).max() > 0 and np.abs(d_dec[[1, 3]]).max() > 0
