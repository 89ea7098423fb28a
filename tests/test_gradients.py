"""Gradient routing, as each paper prescribes: the gated SAE, the JumpReLU
pseudo-derivatives, decoding without `b_dec` (AuxK), the decoder-norm weighting."""

import keras
import numpy as np
import pytest
from keras import ops

import gated_sae_layers as gsl
from gated_sae_layers.layers.jumprelu_encoder import heaviside_step, jump_relu
from tests.backend_grad import gradients
from tests.reference import gated_forward, randomize, weights_of


@pytest.fixture
def setup():
    model = gsl.build_gated_sae(5, 9, sparsity_coefficient=0.2, aux_coefficient=1.0)
    randomize(model, seed=11)
    x = np.random.default_rng(12).normal(size=(8, 5)).astype("float32")
    return model, x


def _term_gradients(model, x, output, loss):
    """Gradients of one loss term, by the paper's name of each weight."""
    names = _named(model)
    grads = gradients(lambda: loss(x, model(x)[output]), list(names.values()))
    return dict(zip(names, grads))


def _named(model):
    e, d = model.encoder, model.decoder
    return {"W_gate": e.gate_kernel, "b_gate": e.gate_bias,
            "r_mag": e.magnitude_log_scale, "b_mag": e.magnitude_bias,
            "W_dec": d.kernel, "b_dec": d.bias}


def test_frozen_decode_passes_exactly_zero_gradient_to_the_decoder():
    decoder = gsl.UnitNormDecoder(4, 3)
    decoder.build()
    f = np.random.default_rng(0).random((5, 4)).astype("float32")
    x = np.ones((5, 3), "float32")
    grads = gradients(lambda: ops.sum(ops.square(x - decoder(f, mode="frozen"))),
                      [decoder.kernel, decoder.bias])
    assert all(np.all(g == 0) for g in grads)


def test_aux_term_gradients(setup):
    model, x = setup
    grads = _term_gradients(model, x, "aux_reconstruction", gsl.AuxReconstruction(1.0))
    # The frozen decoder gets nothing; the magnitude path gets nothing.
    assert np.all(grads["W_dec"] == 0)
    assert np.all(grads["r_mag"] == 0) and np.all(grads["b_mag"] == 0)
    assert np.abs(grads["b_gate"]).max() > 0
    # b_dec learns from the aux term only through the encoder's centering
    # x - b_dec (the paper's pseudo-code does not detach it there).
    w = weights_of(model)
    out = gated_forward(x, **w)
    d_aux = -2 * (x - out["aux_reconstruction"]) / len(x)
    d_pre = (d_aux @ w["W_dec"].T) * (out["gating_pre_activation"] > 0)
    expected_b_dec = -(d_pre @ w["W_gate"].T).sum(0)
    np.testing.assert_allclose(grads["b_dec"], expected_b_dec, rtol=1e-4, atol=1e-6)


def test_aux_trains_decoder_gives_the_numpy_gradient_to_the_decoder():
    """`aux_trains_decoder=True` (SAELens's choice): d aux / d W_dec, b_dec are
    those of `||x - (relu(pi_gate) W_dec + b_dec)||^2` with nothing detached."""
    model = gsl.build_gated_sae(5, 9, sparsity_coefficient=0.2, aux_trains_decoder=True)
    randomize(model, seed=11)
    x = np.random.default_rng(12).normal(size=(8, 5)).astype("float32")
    grads = _term_gradients(model, x, "aux_reconstruction", gsl.AuxReconstruction(1.0))
    w = weights_of(model)
    out = gated_forward(x, **w)
    gate = np.maximum(out["gating_pre_activation"], 0)
    d_aux = -2 * (x - (gate @ w["W_dec"] + w["b_dec"])) / len(x)
    np.testing.assert_allclose(grads["W_dec"], gate.T @ d_aux, rtol=1e-4, atol=1e-6)
    d_pre = (d_aux @ w["W_dec"].T) * (out["gating_pre_activation"] > 0)
    expected_b_dec = d_aux.sum(0) - (d_pre @ w["W_gate"].T).sum(0)
    np.testing.assert_allclose(grads["b_dec"], expected_b_dec, rtol=1e-4, atol=1e-6)
    assert np.all(grads["r_mag"] == 0) and np.all(grads["b_mag"] == 0)


def test_reconstruction_gives_no_gradient_to_the_gate_bias(setup):
    model, x = setup
    grads = _term_gradients(model, x, "reconstruction", gsl.ReconstructionLoss())
    assert np.all(grads["b_gate"] == 0)
    for name in ("W_gate", "r_mag", "b_mag", "W_dec", "b_dec"):
        assert np.abs(grads[name]).max() > 0, name


def test_sparsity_term_trains_only_the_gate_path(setup):
    model, x = setup
    grads = _term_gradients(model, x, "gating_pre_activation", gsl.SparsityPenalty(0.5))
    assert np.all(grads["r_mag"] == 0) and np.all(grads["b_mag"] == 0)
    assert np.all(grads["W_dec"] == 0)
    assert np.abs(grads["b_gate"]).max() > 0 and np.abs(grads["W_gate"]).max() > 0


def test_parallel_gradient_removal():
    plain = gsl.UnitNormDecoder(6, 4)
    projected = gsl.UnitNormDecoder(6, 4, remove_parallel_gradient=True)
    plain.build()
    projected.build()
    projected.set_weights(plain.get_weights())
    f = np.random.default_rng(3).random((7, 6)).astype("float32")
    target = np.random.default_rng(4).random((7, 4)).astype("float32")
    (g_plain,) = gradients(lambda: ops.sum(ops.square(target - plain(f))), [plain.kernel])
    (g_proj,) = gradients(lambda: ops.sum(ops.square(target - projected(f))),
                          [projected.kernel])
    w = np.asarray(plain.kernel)
    np.testing.assert_allclose((g_proj * w).sum(1), 0, atol=1e-5)
    expected = g_plain - (g_plain * w).sum(1, keepdims=True) * w
    np.testing.assert_allclose(g_proj, expected, rtol=1e-4, atol=1e-6)
    # The forward pass is unchanged.
    np.testing.assert_allclose(plain(f), projected(f), rtol=1e-6)


# ------------------------------------------------------- JumpReLU (eq. 11-12)
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


def test_heaviside_step_pseudo_derivative_and_no_gradient_to_z():
    z, theta = keras.Variable(Z), keras.Variable(THETA)
    dz, dtheta = gradients(lambda: ops.sum(W * heaviside_step(z, theta, EPS)), [z, theta])
    assert np.all(dz == 0)
    window = _rect((Z - THETA) / EPS)
    np.testing.assert_allclose(dtheta, (W * -(1.0 / EPS) * window).sum(0), rtol=1e-5)


def test_l0_term_trains_only_the_threshold_through_log_threshold():
    encoder = gsl.JumpReLUEncoder(3, bandwidth=EPS)
    encoder.build((None, 3))
    encoder.kernel.assign(np.eye(3, dtype="float32"))
    encoder.log_threshold.assign(np.log(THETA))
    grads = gradients(lambda: ops.sum(encoder(Z)["active_latents"]),
                      [encoder.kernel, encoder.bias, encoder.log_threshold])
    assert np.all(grads[0] == 0) and np.all(grads[1] == 0)
    expected = THETA * (-(1.0 / EPS) * _rect((Z - THETA) / EPS)).sum(0)  # chain rule
    np.testing.assert_allclose(grads[2], expected, rtol=1e-5)


# ------------------------------------------------------------ AuxK (Gao et al.)
def test_decoding_without_b_dec_gives_b_dec_exactly_zero_gradient():
    decoder = gsl.UnitNormDecoder(4, 3)
    decoder.build()
    decoder.bias.assign([1.0, -2.0, 0.5])
    a = np.random.default_rng(0).random((5, 4)).astype("float32")
    w = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
    d_kernel, d_bias = gradients(lambda: ops.sum(w * decoder(a, use_bias=False)),
                                 [decoder.kernel, decoder.bias])
    assert np.all(d_bias == 0)
    np.testing.assert_allclose(d_kernel, a.T @ w, rtol=1e-5)


def test_auxk_loss_trains_only_dead_latents():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 4)).astype("float32")
    encoder = gsl.TopKEncoder(6, k=2, k_aux=2, dead_steps_threshold=3)
    decoder = gsl.UnitNormDecoder(6, 4)
    encoder.build(x.shape)
    decoder.build()
    encoder.steps_since_fired.assign([0, 5, 0, 3, 1, 0])  # latents 1 and 3 are dead
    residual_layer, loss = gsl.AuxKResidual(), gsl.AuxKLoss(1.0)

    def aux_loss():
        out = encoder(decoder(x, mode="center"))
        reconstruction = decoder(out["latents"])
        residual = residual_layer([x, reconstruction,
                                   decoder(out["aux_latents"], use_bias=False),
                                   out["aux_latents"]])
        return loss(None, residual)

    d_enc, d_dec, d_b_dec = gradients(
        aux_loss, [encoder.kernel, decoder.kernel, decoder.bias])
    live = [0, 2, 4, 5]
    # x_hat is detached and live latents are masked out: no gradient reaches them.
    assert np.all(d_enc[:, live] == 0) and np.all(d_dec[live] == 0)
    assert np.abs(d_enc[:, [1, 3]]).max() > 0 and np.abs(d_dec[[1, 3]]).max() > 0
    # b_dec only through the encoder's centering, as in the main model.
    assert np.abs(d_b_dec).max() > 0


# ------------------------------------------- decoder-norm weighting (ReLU SAE)
def test_decoder_norm_weighting_passes_the_norm_gradient_to_the_decoder_rows():
    decoder = gsl.UnitNormDecoder(4, 3, kernel_constraint=None)
    decoder.build()
    kernel = np.random.default_rng(5).normal(size=(4, 3)).astype("float32")
    decoder.kernel.assign(kernel)
    weighting = gsl.DecoderNormWeighting(decoder)
    f = np.random.default_rng(6).random((5, 4)).astype("float32")
    d_kernel, d_bias = gradients(lambda: ops.sum(weighting(f)),
                                 [decoder.kernel, decoder.bias])
    norms = np.linalg.norm(kernel.astype("float64"), axis=1, keepdims=True)
    # d/dW_j sum_b f_bj ||W_j|| = (sum_b f_bj) W_j / ||W_j||
    np.testing.assert_allclose(d_kernel, f.sum(0)[:, None] * kernel / norms, rtol=1e-5)
    assert np.all(d_bias == 0)
