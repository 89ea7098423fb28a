"""Per-variable learning-rate multipliers (`learning_rate_multipliers`, `models/learning_rates.py`)."""

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl

X = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")


def _free_decoder_sae(multiplier, seed=3):
    # Free decoder rows (no unit-norm constraint), so one step's change of
    # W_dec is the optimizer's step itself.
    keras.utils.set_random_seed(seed)
    return gsl.build_gated_sae(6, 12, 0.05, weight_by_decoder_norm=True,
                               decoder_learning_rate_multiplier=multiplier)


def _one_step(model, optimizer, jit_compile=False):
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    before = {v.path: np.array(v) for v in model.trainable_variables}
    model.fit(X, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return {v.path: np.array(v) - before[v.path] for v in model.trainable_variables}


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.SGD(0.05),
    lambda: keras.optimizers.Adam(1e-3, beta_1=0.0),
    lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05)),
], ids=["sgd", "adam", "loss_scaled_sgd"])
def test_the_decoder_steps_that_many_times_as_far_and_nothing_else_changes(
        optimizer, jit_compile):
    plain = _one_step(_free_decoder_sae(1.0), optimizer(), jit_compile)
    scaled_model = _free_decoder_sae(3.0)
    assert scaled_model.learning_rate_multipliers == {"decoder/kernel": 3.0}
    scaled = _one_step(scaled_model, optimizer(), jit_compile)
    for path, step in plain.items():
        expected = 3.0 * step if path == "decoder/kernel" else step
        np.testing.assert_allclose(scaled[path], expected, rtol=1e-4, atol=1e-7)
    assert np.abs(plain["decoder/kernel"]).max() > 0


def test_a_unit_norm_decoder_turns_faster_and_keeps_unit_rows():
    steps = {}
    for multiplier in (1.0, 3.0):
        keras.utils.set_random_seed(4)
        model = gsl.build_gated_sae(6, 12, 0.05,
                                    decoder_learning_rate_multiplier=multiplier)
        steps[multiplier] = _one_step(model, keras.optimizers.Adam(1e-3, beta_1=0.0))
        np.testing.assert_allclose(model.decoder.row_norms(), 1.0, atol=1e-5)
    turned = {m: np.linalg.norm(s["decoder/kernel"]) for m, s in steps.items()}
    assert 2.5 < turned[3.0] / turned[1.0] < 3.5


def test_the_multiplier_survives_a_save_and_reload(tmp_path):
    model = _free_decoder_sae(3.0)
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=False)
    model.fit(X, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert reloaded.learning_rate_multipliers == {"decoder/kernel": 3.0}
    assert reloaded.architecture["arguments"]["decoder_learning_rate_multiplier"] == 3.0
    for trained in (model, reloaded):
        trained.fit(X, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.trainable_variables, reloaded.trainable_variables):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-7)


def test_setting_the_multipliers_after_compile_rewraps_the_optimizer():
    model = _free_decoder_sae(1.0)
    plain = _one_step(model, keras.optimizers.SGD(0.05))["decoder/kernel"]
    model = _free_decoder_sae(1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=False)
    model.learning_rate_multipliers = {"decoder/kernel": 2.0}
    before = np.array(model.decoder.kernel)
    model.fit(X, batch_size=16, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(np.array(model.decoder.kernel) - before, 2.0 * plain,
                               rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("value, error, match", [
    ({"decoder/missing": 2.0}, ValueError, "does not train.*decoder/missing"),
    ({"decoder/kernel": 0.0}, ValueError, "must be > 0"),
    ({"decoder/kernel": -1.0}, ValueError, ">= 0"),
    ({"decoder/kernel": float("nan")}, ValueError, "finite"),
    ({"decoder/kernel": "3"}, TypeError, "number"),
    ([("decoder/kernel", 3.0)], ValueError, "must be None or a dict"),
])
def test_bad_multipliers_are_refused_before_anything_changes(value, error, match):
    model = gsl.build_gated_sae(6, 12, 0.05)
    with pytest.raises(error, match=match):
        model.learning_rate_multipliers = value
    assert model.learning_rate_multipliers == {}


@pytest.mark.parametrize("value", [0, -2.0, float("inf")])
def test_the_builder_refuses_a_bad_decoder_multiplier(value):
    with pytest.raises(ValueError, match="decoder_learning_rate_multiplier"):
        gsl.build_gated_sae(6, 12, 0.05, decoder_learning_rate_multiplier=value)


def _falling(start=5.0, steps=4):
    return keras.optimizers.schedules.PolynomialDecay(start, steps, 1.0)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_scheduled_multiplier_scales_each_step_by_its_value_at_that_step(jit_compile):
    # SGD on free rows: step t of W_dec is m(t) times the plain step t when
    # the weights are the same, so compare a run step by step, re-syncing.
    schedule = _falling(5.0, 4)
    plain, scaled = _free_decoder_sae(1.0), _free_decoder_sae(schedule)
    for model in (plain, scaled):
        model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=jit_compile)
    for step in range(6):                                   # past the schedule's end
        for a, b in zip(plain.trainable_variables, scaled.trainable_variables):
            b.assign(np.array(a))                           # no shared buffer
        before = np.array(plain.decoder.kernel)
        for model in (plain, scaled):
            model.fit(X, batch_size=16, epochs=1, shuffle=False, verbose=0)
        expected = float(schedule(step))                    # 5, 4, 3, 2, 1, 1
        np.testing.assert_allclose(
            np.array(scaled.decoder.kernel) - before,
            expected * (np.array(plain.decoder.kernel) - before), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(np.array(scaled.encoder.gate_bias),
                                   np.array(plain.encoder.gate_bias), rtol=1e-5, atol=1e-7)
    assert int(scaled.optimizer.iterations) == 6


def test_a_scheduled_multiplier_survives_a_save_and_reload(tmp_path):
    model = _free_decoder_sae(_falling(5.0, 4))
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=False)
    model.fit(X, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    schedule = reloaded.learning_rate_multipliers["decoder/kernel"]
    assert isinstance(schedule, keras.optimizers.schedules.PolynomialDecay)
    assert schedule.get_config() == _falling(5.0, 4).get_config()
    recorded = reloaded.architecture["arguments"]["decoder_learning_rate_multiplier"]
    assert recorded["class_name"] == "PolynomialDecay"
    rebuilt = gsl.build_sae("gated", 6, 12, **reloaded.architecture["arguments"])
    assert rebuilt.learning_rate_multipliers["decoder/kernel"].get_config() == \
        schedule.get_config()
    reloaded.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=False)
    reloaded.optimizer.iterations.assign(1)                 # where model's stands
    for trained in (model, reloaded):
        trained.fit(X, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(model.trainable_variables, reloaded.trainable_variables):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("value, match", [
    (keras.optimizers.schedules.PolynomialDecay(0.0, 4, 1.0), "step 0.*must be > 0"),
    (keras.optimizers.schedules.PolynomialDecay(float("nan"), 4, 1.0), "step 0.*finite"),
    ({"class_name": "NoSuchSchedule", "config": {}}, "serialized Keras LearningRateSchedule"),
])
def test_bad_scheduled_multipliers_are_refused(value, match):
    model = gsl.build_gated_sae(6, 12, 0.05)
    with pytest.raises(ValueError, match=match):
        model.learning_rate_multipliers = {"decoder/kernel": value}
    with pytest.raises(ValueError, match="decoder_learning_rate_multiplier"):
        gsl.build_gated_sae(6, 12, 0.05, decoder_learning_rate_multiplier=value)
    assert model.learning_rate_multipliers == {}
