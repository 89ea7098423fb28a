"""The training callbacks of `gated_sae_layers/callbacks.py` on tiny real fits.

`DecoderNormalizer` (when it renormalizes the decoder rows, and what it
refuses) and `SparsityWarmup` (the ramp, on which step it acts, that it
stops after it and puts the target back). Their argument checks on hostile
values: `tests/test_hostile_fit.py`; the warm-up's target after a failed or
resumed fit: `tests/test_guarantees.py`. The other callbacks have files of
their own: `DeadLatentResampler` (`tests/test_resampling.py`), `TargetL0`
(`tests/test_target_l0.py`).
"""

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from tests.reference import randomize


def _data(rows=100, width=6, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, width)).astype("float32")


def _model(width=6, latent=10, lam=0.1):
    model = gsl.build_gated_sae(width, latent, lam)
    randomize(model, seed=7)
    return model


def _row_norms(decoder):
    return np.linalg.norm(np.asarray(decoder.kernel, "float64"), axis=1)


# ---------------------------------------------------------- DecoderNormalizer
def _unconstrained_model(width=4, latent=6):
    """A gated SAE whose decoder has no `UnitNormRows` constraint, its rows
    scaled to norm ~3 (weights loaded from elsewhere)."""
    x = keras.Input((width,))
    decoder = gsl.UnitNormDecoder(latent, width, kernel_constraint=None, name="decoder")
    encoded = gsl.GatedEncoder(latent)(decoder(x, mode="center"))
    model = gsl.SparseAutoencoder(
        x, {"reconstruction": decoder(encoded["latents"]),
            "gating_pre_activation": encoded["gating_pre_activation"]},
        loss_terms={"reconstruction": gsl.ReconstructionLoss(),
                    "gating_pre_activation": gsl.SparsityPenalty(0.1)})
    decoder.kernel.assign(3.0 * np.asarray(decoder.kernel))
    return model, decoder


def test_decoder_normalizer_when_the_constraint_is_off():
    width, latent = 4, 6
    model, decoder = _unconstrained_model(width, latent)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    data = _data(rows=32, width=width)
    model.fit(data, epochs=1, batch_size=8, verbose=0)
    assert not np.allclose(np.linalg.norm(np.asarray(decoder.kernel), axis=1), 1.0)
    model.fit(data, epochs=1, batch_size=8, verbose=0, callbacks=[gsl.DecoderNormalizer()])
    np.testing.assert_allclose(np.linalg.norm(np.asarray(decoder.kernel), axis=1), 1.0,
                               atol=1e-6)
    with pytest.raises(ValueError, match="frequency"):
        gsl.DecoderNormalizer(frequency="step")


@pytest.mark.parametrize("frequency", ["batch", "epoch"])
def test_decoder_normalizer_renormalizes_before_the_first_step_and_at_its_frequency(
        frequency):
    """Rows are unit norm before the first optimizer step (the constraint
    would wait for it), then after every batch (`"batch"`) or only at the
    end of each epoch (`"epoch"`: in between, the updates move them off)."""
    model, decoder = _unconstrained_model()
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    at_batch_begin, at_batch_end, at_epoch_end = [], [], []
    # Listed after the normalizer, so it sees the rows the normalizer left.
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda b, logs: at_batch_begin.append(_row_norms(decoder)),
        on_train_batch_end=lambda b, logs: at_batch_end.append(_row_norms(decoder)),
        on_epoch_end=lambda e, logs: at_epoch_end.append(_row_norms(decoder)))
    model.fit(_data(rows=32, width=4), epochs=2, batch_size=8, verbose=0,
              callbacks=[gsl.DecoderNormalizer(frequency), record])
    np.testing.assert_allclose(at_batch_begin[0], 1.0, atol=1e-6)  # before step 1
    assert len(at_batch_end) == 8 and len(at_epoch_end) == 2
    for norms in at_epoch_end:
        np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    off_unit = [not np.allclose(norms, 1.0, atol=1e-4) for norms in at_batch_end]
    if frequency == "batch":
        assert not any(off_unit)
    else:  # every step moves the rows off unit norm, the epoch's end brings them back
        assert all(off_unit)
        np.testing.assert_allclose(at_batch_begin[4], 1.0, atol=1e-6)


def test_decoder_normalizer_refuses_a_model_without_a_unit_norm_decoder():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs), name="plain")
    model.compile(optimizer="sgd", loss="mse")
    x = _data(rows=8, width=4)
    with pytest.raises(ValueError, match="no UnitNormDecoder layer in the model 'plain'"):
        model.fit(x, x, epochs=1, verbose=0, callbacks=[gsl.DecoderNormalizer()])


# ------------------------------------------------------------ SparsityWarmup
def test_sparsity_warmup_ramps_then_restores():
    x = _data(rows=64)
    model = _model(lam=0.4)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: seen.append(model.sparsity_coefficient))
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    model.fit(x, epochs=2, batch_size=16, verbose=0,
              callbacks=[gsl.SparsityWarmup(steps=4), record])
    np.testing.assert_allclose(seen, [0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4], rtol=1e-6)
    assert model.sparsity_coefficient == pytest.approx(0.4)
    with pytest.raises(ValueError, match="steps"):
        gsl.SparsityWarmup(steps=0)


def test_sparsity_warmup_acts_on_the_very_step_it_ramps():
    """With the weights fixed (lr 0) and one batch repeated, step t's
    sparsity term is (t / steps) of the full one: the logged epoch means
    are s * [0, 1/8, 1/4, 3/8] (running means of s * [0, 1/4, 1/2, 3/4])."""
    x = np.tile(_data(rows=16), (4, 1))
    model = _model(lam=0.4)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logged = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: logged.append(logs["sparsity"]))
    model.fit(x, epochs=1, batch_size=16, shuffle=False, verbose=0,
              callbacks=[gsl.SparsityWarmup(steps=4), record])
    full = model.evaluate(x[:16], batch_size=16, verbose=0, return_dict=True)["sparsity"]
    assert full > 0
    np.testing.assert_allclose(logged, np.array([0, 1 / 8, 1 / 4, 3 / 8]) * full,
                               rtol=1e-5, atol=1e-7)


def test_sparsity_warmup_leaves_the_coefficient_alone_after_the_ramp():
    """After the ramp another schedule may set the coefficient; the warm-up
    no longer overwrites it (it puts its target back when `fit` ends)."""
    model = _model(lam=0.4)
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    seen = []

    def set_then_record(batch, logs):
        if batch == 3:
            model.set_sparsity_coefficient(0.9)
        seen.append(model.sparsity_coefficient)

    record = keras.callbacks.LambdaCallback(on_train_batch_end=set_then_record)
    model.fit(_data(rows=96), epochs=1, batch_size=16, verbose=0,
              callbacks=[gsl.SparsityWarmup(steps=2), record])
    np.testing.assert_allclose(seen, [0.0, 0.2, 0.4, 0.9, 0.9, 0.9], rtol=1e-6)
    assert model.sparsity_coefficient == pytest.approx(0.4)


def test_sparsity_warmup_refuses_a_model_without_a_sparsity_term():
    model = gsl.build_topk_sae(6, 10, k=2)  # TopK: sparse by k, no penalty
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="SparsityWarmup needs a SparseAutoencoder "
                                         "with a sparsity term"):
        model.fit(_data(rows=16), epochs=1, verbose=0,
                  callbacks=[gsl.SparsityWarmup(steps=4)])
