"""The device-resident `fit` path on JAX equals the stock Keras loop.

Runs on the JAX backend only: the JAX leg, `KERAS_BACKEND=jax python -m pytest -m
both_backends` (the file list is in `tests/conftest.py`).
"""

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers.models._fit import device_resident as resident
from tests.test_hostile_fit import (
    BAD_FIT_ARGUMENTS,
    CASE_IDS,
    assert_refused_before_training,
    compiled_model,
)

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="the device-resident path is JAX's")

INPUT_DIM, LATENT_DIM = 8, 32


def _data(rows=300, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, INPUT_DIM)) *
            rng.uniform(0.5, 2.0, INPUT_DIM)).astype("float32")


def _model(architecture="gated", learning_rate=1e-2, **compile_kwargs):
    keras.utils.set_random_seed(7)
    kwargs = ({"k": 4, "k_aux": 8, "dead_steps_threshold": 3}
              if "topk" in architecture else {"sparsity_coefficient": 1e-2})
    model = gsl.build_sae(architecture, INPUT_DIM, LATENT_DIM, **kwargs)
    model.compile(keras.optimizers.Adam(learning_rate), **compile_kwargs)
    return model


def _weights(model):
    return [np.array(v.value) for v in model.weights]


def _assert_same(weights_a, weights_b, tolerance=1e-5):
    assert len(weights_a) == len(weights_b)
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


class CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(batch)


def test_train_step_memory_counts_the_weights_and_the_batch():
    """XLA's buffer assignment holds at least the weights, Adam's two slots and
    the data chunk, and its temporaries grow with the batch."""
    model = _model()
    weights = sum(int(np.prod(v.shape)) * 4 for v in model.trainable_variables)
    small = gsl.train_step_memory(model, batch_size=16)
    large = gsl.train_step_memory(model, batch_size=256)
    assert small["argument_bytes"] >= 3 * weights + 4 * 16 * INPUT_DIM * 4
    assert large["temp_bytes"] > small["temp_bytes"]
    assert small["peak_bytes"] == (small["argument_bytes"] + small["output_bytes"]
                                   - small["alias_bytes"] + small["temp_bytes"])
    with pytest.raises(ValueError, match="chunk_rows"):
        gsl.train_step_memory(model, batch_size=16, chunk_rows=8)


@pytest.mark.parametrize("architecture", ["gated", "batch_topk", "jumprelu"])
def test_equals_stock_fit_without_shuffle(architecture):
    """Same batches in the same order: same history and weights as Keras's loop,
    including the partial last batch, a validation split and non-trainable
    per-latent state (TopK's dead-latent counters, BatchTopK's threshold)."""
    x = _data(300)
    histories, weights = [], []
    for device_resident in (False, True):
        model = _model(architecture)
        history = model.fit(x, batch_size=64, epochs=2, shuffle=False,
                            validation_split=0.2, verbose=0,
                            device_resident=device_resident)
        histories.append(history.history)
        weights.append(_weights(model))
    assert histories[0].keys() == histories[1].keys()
    for name in histories[0]:
        np.testing.assert_allclose(histories[1][name], histories[0][name],
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    _assert_same(weights[1], weights[0])


def test_chunks_stream_in_order_without_shuffle():
    """Data split into device chunks trains exactly like one chunk."""
    x = _data(500)
    results = []
    for chunk_rows in (None, 128):
        model = _model()
        history = model.fit(x, batch_size=32, epochs=2, shuffle=False,
                            verbose=0, device_chunk_rows=chunk_rows)
        results.append((history.history["loss"], _weights(model)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    _assert_same(results[1][1], results[0][1])


_FROZEN = {}


@hypothesis.settings(max_examples=4, deadline=None)
@hypothesis.given(rows=st.integers(40, 200), batch_size=st.sampled_from([16, 32]),
                  chunk_batches=st.integers(1, 4))
def test_every_row_once_per_epoch_when_shuffled(rows, batch_size, chunk_batches):
    """With a zero learning rate the epoch's metrics are sums over the rows
    trained on, so they equal `evaluate` on the data only if every row was
    used exactly once (a duplicated or missed row changes them)."""
    x = _data(rows, seed=rows)
    if "model" not in _FROZEN:             # weights never move: share it
        _FROZEN["model"] = _model(learning_rate=0.0)
    model = _FROZEN["model"]
    expected = model.evaluate(x, batch_size=rows, verbose=0, return_dict=True)
    history = model.fit(x, batch_size=batch_size, epochs=2, verbose=0,
                        device_chunk_rows=batch_size * chunk_batches)
    for name in ("loss", "l0", "fvu", "reconstruction"):
        np.testing.assert_allclose(history.history[name], [expected[name]] * 2,
                                   rtol=2e-5, err_msg=name)


def test_shuffle_changes_between_epochs_and_is_seeded():
    x = _data(256)
    model = _model()
    trainer = resident._Trainer(model, x, 32, shuffle=True, chunk_rows=None)
    first, second = (np.asarray(trainer.order(0, epoch, 256)) for epoch in (0, 1))
    assert sorted(first) == list(range(256)) == sorted(second)
    assert not np.array_equal(first, second)
    losses = []
    for _ in range(2):
        model = _model()
        keras.utils.set_random_seed(3)
        losses.append(model.fit(x, batch_size=32, epochs=2, verbose=0)
                      .history["loss"])
    assert losses[0] == losses[1]


def test_non_finite_rows_stop_before_any_step():
    x = _data(300)
    x[217, 3] = np.nan
    model = _model()
    before = _weights(model)
    with pytest.raises(ValueError, match=r"1 of 300 rows \(first at row 217\)"):
        model.fit(x, batch_size=32, verbose=0)
    _assert_same(_weights(model), before, tolerance=0)
    assert int(model.optimizer.iterations.value) == 0


def test_non_finite_rows_in_a_later_chunk_stop_before_that_chunk():
    x = _data(256)
    x[200] = np.inf
    model = _model()
    with pytest.raises(ValueError, match=r"first at row 200"):
        model.fit(x, batch_size=32, shuffle=False, device_chunk_rows=128,
                  verbose=0)
    assert int(model.optimizer.iterations.value) == 4      # chunk 0 only
    assert all(np.isfinite(w).all() for w in _weights(model))


def test_non_finite_loss_stops_before_the_weights_change():
    """Finite rows whose squares overflow: the step on them is skipped, fit
    raises, and the model equals one trained on the batches before it."""
    x = _data(320)
    x[70:75] *= 1e20                      # inside batch 2 (rows 64-95)
    model = _model()
    with pytest.raises(ValueError, match="NaN or Inf at step 2"):
        model.fit(x, batch_size=32, shuffle=False, verbose=0)
    reference = _model()
    reference.fit(x[:64], batch_size=32, shuffle=False, verbose=0,
                  device_resident=False)
    assert int(model.optimizer.iterations.value) == 2
    _assert_same(_weights(model), _weights(reference))
    _assert_same([np.array(v.value) for v in model.optimizer.variables],
                 [np.array(v.value) for v in reference.optimizer.variables])


def test_batch_callbacks_see_every_step_unless_coarse_is_safe():
    x = _data(320)                       # 10 steps of 32
    counter = CountBatches()
    _model().fit(x, batch_size=32, verbose=0, callbacks=[counter])
    assert counter.ends == list(range(10))

    model = _model(steps_per_execution=4)
    counter = CountBatches()
    model.fit(x, batch_size=32, verbose=0, callbacks=[counter])
    assert counter.ends == [3, 7, 9]

    assert resident.steps_per_dispatch(_model(), [keras.callbacks.History()],
                                       10) == 10
    assert resident.steps_per_dispatch(
        _model(), [], 10_000) == resident.AUTO_STEPS_PER_DISPATCH


def test_sparsity_warmup_is_exact_then_steps_run_many_per_dispatch():
    """The ramp sets the coefficient before each of its steps, as in the
    stock loop; after it, steps go back to many per dispatch."""
    x = _data(640)                       # 20 steps of 32 per epoch
    results = []
    for device_resident in (False, True):
        model = _model()
        warmup, counter = gsl.SparsityWarmup(12), CountBatches()
        history = model.fit(x, batch_size=32, epochs=2, verbose=0,
                            shuffle=False, callbacks=[warmup, counter],
                            device_resident=device_resident)
        results.append((history.history["loss"], _weights(model), counter.ends))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    _assert_same(results[1][1], results[0][1])
    # CountBatches needs every batch too; without it the ramp alone decides.
    assert results[1][2] == results[0][2] == list(range(20)) * 2
    model = _model()
    warmup = gsl.SparsityWarmup(12)
    warmup.set_model(model)
    warmup.on_train_begin()
    assert resident.steps_per_dispatch(model, [warmup], 100) == 1
    warmup.on_train_batch_begin(0)
    model.optimizer.iterations.assign(12)
    warmup.on_train_batch_begin(12)
    assert resident.steps_per_dispatch(model, [warmup], 100) == 100


def test_float16_and_device_arrays_train_like_float32():
    import jax

    x = _data(200)
    x16 = x.astype("float16")
    weights = []
    for data, resident_flag in ((x16.astype("float32"), False), (x16, True),
                                (jax.device_put(x16), True)):
        model = _model()
        model.fit(data, batch_size=50, shuffle=False, verbose=0,
                  device_resident=resident_flag)
        weights.append(_weights(model))
    _assert_same(weights[1], weights[0])
    _assert_same(weights[2], weights[0])


def test_argument_errors():
    x = _data(64)
    model = _model()
    with pytest.raises(ValueError, match="device_resident=True.*`y` is given"):
        model.fit(x, x * 2, device_resident=True, verbose=0)
    with pytest.raises(ValueError, match="device_resident"):
        model.fit(x, device_resident="yes", verbose=0)
    with pytest.raises(ValueError, match="device_chunk_rows"):
        model.fit(x, device_chunk_rows=0, verbose=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        model.fit(x, epoch=2, verbose=0)
    with pytest.raises(TypeError, match="float"):
        model.fit(x.astype("int32"), verbose=0)
    # `y` falls back to the stock loop under "auto".
    model.fit(x, x, verbose=0)


@pytest.mark.parametrize("fit_kwargs, compile_kwargs, error, message", BAD_FIT_ARGUMENTS,
                         ids=CASE_IDS)
def test_every_loop_refuses_bad_loop_arguments_alike(
        fit_kwargs, compile_kwargs, error, message):
    """Issue 20: the device-resident loop refused none of these (a raw
    `IndexError` for `validation_split=1.0`, batches of 2 for
    `batch_size=2.5`, ...); now both loops raise the same error before any
    step, with Keras's text where Keras has one."""
    for loop in (False, True, "auto"):
        model = compiled_model(compile_kwargs)
        assert_refused_before_training(model, fit_kwargs, error, message,
                                       device_resident=loop)


def test_activation_store_streams_shard_by_shard(tmp_path):
    """A store larger than one device chunk trains like its rows in memory."""
    x = _data(320).astype("float16")
    store = gsl.activations.ActivationStore.create(
        tmp_path / "store", INPUT_DIM, dtype="float16", shard_rows=64)
    store.append(x)
    store.close()
    store = gsl.activations.ActivationStore.open(tmp_path / "store")
    weights = []
    for data, options in ((x, {}), (store, {"device_chunk_rows": 128})):
        model = _model()
        history = model.fit(data, batch_size=32, epochs=2, shuffle=False,
                            verbose=0, **options)
        weights.append(_weights(model))
    _assert_same(weights[1], weights[0])
    assert history.history["l0"][-1] > 0

    model = _model()
    with pytest.raises(ValueError, match="width 8"):
        wrong = gsl.activations.ActivationStore.create(tmp_path / "w", 5)
        wrong.append(np.ones((4, 5), "float32"))
        wrong.close()
        model.fit(wrong, verbose=0)
