import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import gated_sae_layers as gsl
from gated_sae_layers._keras_compat import optimizer_slots as _optimizer_slots
from gated_sae_layers.resampling import DeadLatentResampler


@pytest.fixture(scope="module")
def digits():
    return (load_digits().data / 16.0).astype("float32")


def _trained_with_dead_latents(x, dead):
    model = gsl.build_gated_sae(64, 48, sparsity_coefficient=0.05)
    model.decoder.bias.assign(x.mean(0))
    model.compile(optimizer=keras.optimizers.Adam(1e-3, beta_1=0.0))
    model.fit(x, epochs=1, batch_size=128, verbose=0)
    bias = np.array(model.encoder.gate_bias)
    bias[dead] = -1e3  # these latents can never open their gate
    model.encoder.gate_bias.assign(bias)
    return model


def test_resampling_revives_dead_latents_and_touches_nothing_else(digits):
    dead = np.array([3, 17, 40])
    model = _trained_with_dead_latents(digits, dead)
    before = {v.path: np.array(v) for v in model.trainable_variables}
    adam = {v.path: [np.array(s) for s in _optimizer_slots(model.optimizer, v)]
            for v in model.trainable_variables}
    assert all(len(s) == 2 for s in adam.values())  # Adam's two moments each
    resampler = DeadLatentResampler(digits, check_every=1)
    assert resampler.resample(model) == 3

    codes = model.predict_on_batch(digits)["latents"]
    assert np.all(codes[:, dead].max(0) > 0)  # they fire again
    w_dec = np.asarray(model.decoder.kernel)
    np.testing.assert_allclose(np.linalg.norm(w_dec, axis=1), 1.0, atol=1e-5)
    alive = np.setdiff1d(np.arange(48), dead)
    np.testing.assert_array_equal(w_dec[alive], before["decoder/kernel"][alive])
    np.testing.assert_array_equal(np.asarray(model.encoder.gate_kernel)[:, alive],
                                  before["encoder/gate_kernel"][:, alive])
    np.testing.assert_array_equal(np.asarray(model.encoder.gate_bias)[dead], 0.0)
    for variable in (model.decoder.kernel, model.encoder.gate_kernel):
        for old, slot in zip(adam[variable.path],
                             _optimizer_slots(model.optimizer, variable)):
            slot = np.asarray(slot)
            if variable is model.decoder.kernel:
                assert np.all(slot[dead] == 0)
                np.testing.assert_array_equal(slot[alive], old[alive])
            else:
                assert np.all(slot[:, dead] == 0)
                np.testing.assert_array_equal(slot[:, alive], old[:, alive])


def test_resampler_as_a_callback_during_fit(digits):
    model = _trained_with_dead_latents(digits, np.arange(0, 48, 4))
    # The first fit ran 15 steps; checks fall on steps 20 and 25, none after 25.
    resampler = DeadLatentResampler(digits[:512], check_every=5, until_step=25)
    model.fit(digits, epochs=2, batch_size=128, verbose=0, callbacks=[resampler])
    assert [step for step, _ in resampler.resampled] == [20, 25]
    assert resampler.resampled[0][1] >= 12  # the 12 latents killed by hand
    assert resampler.resampled[1][1] < resampler.resampled[0][1]
    assert all(np.isfinite(np.asarray(v)).all() for v in model.weights)


def test_resampler_bad_arguments(digits):
    with pytest.raises(ValueError, match="check_every"):
        DeadLatentResampler(digits, check_every=0)
    with pytest.raises(ValueError, match="NaN"):
        DeadLatentResampler(np.full((4, 64), np.nan, "float32"), check_every=1)


def test_resampling_works_with_the_relu_sae(digits):
    model = gsl.build_relu_sae(64, 48, sparsity_coefficient=0.05)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(digits, epochs=1, batch_size=128, verbose=0)
    bias = np.array(model.encoder.bias)
    bias[[5, 6]] = -1e3
    model.encoder.bias.assign(bias)
    assert DeadLatentResampler(digits, check_every=1).resample(model) >= 2
    codes = model.predict_on_batch(digits)["latents"]
    assert np.all(codes[:, [5, 6]].max(0) > 0)


@pytest.mark.parametrize("architecture, kwargs", [
    ("topk", {"k": 4, "dead_steps_threshold": 1}),
    ("batch_topk", {"k": 4, "dead_steps_threshold": 1}),
    ("jumprelu", {"sparsity_coefficient": 0.01, "initial_threshold": 0.05}),
])
def test_resampling_resets_each_encoders_latent_parameters(architecture, kwargs, digits):
    """The encoder's protocol says what to reset: biases to 0, a JumpReLU
    threshold to its initial value, the dead-latent counter to 0."""
    data = digits[:256]
    model = gsl.build_sae(architecture, 64, 16, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    encoder = model.encoder
    bias = np.array(encoder.bias)
    bias[[2, 9]] = -1e3
    encoder.bias.assign(bias)
    moved = {}
    for variable, _ in encoder.latent_parameters():
        if variable is not encoder.bias:  # off its reset value everywhere
            moved[variable.name] = np.asarray(variable) + 3
            variable.assign(moved[variable.name])
    dead = np.flatnonzero(model.predict_on_batch(data)["latents"].max(0) <= 0)
    alive = np.setdiff1d(np.arange(16), dead)
    assert {2, 9} <= set(dead) and alive.size
    kernel_before = np.array(encoder.input_kernel)
    assert DeadLatentResampler(data, check_every=1).resample(model) == dead.size
    for variable, value in encoder.latent_parameters():
        np.testing.assert_allclose(np.asarray(variable)[dead], value, rtol=1e-6)
        if variable.name in moved:
            np.testing.assert_array_equal(np.asarray(variable)[alive],
                                          moved[variable.name][alive])
    kernel_after = np.asarray(encoder.input_kernel)
    np.testing.assert_array_equal(kernel_after[:, alive], kernel_before[:, alive])
    assert np.all(np.abs(kernel_after[:, dead] - kernel_before[:, dead]).max(0) > 0)
