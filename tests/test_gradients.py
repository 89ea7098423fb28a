"""Gradient routing of the gated SAE, as the paper prescribes."""

import numpy as np
import pytest
from keras import ops

import gated_sae_layers as gsl
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
