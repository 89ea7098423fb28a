import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import gated_sae_layers as gsl
from gated_sae_layers.resampling import DeadLatentResampler, _optimizer_slots


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
