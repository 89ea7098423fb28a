"""The sparse training path (`compile(sparse=...)`) equals the dense step.

For every architecture, an epoch on the sparse path against the same epoch
on the dense path (weights, optimizer state, every logged term and metric),
in float32 and under `mixed_bfloat16`, with caps that force the dense
fallback; the switch's choices and errors; the adaptive cap; the memory of
the compiled step. Runs on TensorFlow and on the JAX leg
(`-m both_backends`). The kernels: `tests/test_sparse_kernels.py`.
"""

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers.models.builders import assembly
from gated_sae_layers.models.sparse_path import cap as sparse_cap
from gated_sae_layers.models.sparse_path import plan as sparse_plan
from tests.harness import (ARCHITECTURES, K_ARCHITECTURES, build_model,
                           dtype_policy_scope)

INPUT_DIM, LATENT_DIM = 12, 48
# Each example of the training properties compiles two models: a few suffice
# (the profile's count still lowers it on the JAX leg).
FEW = min(2, hypothesis.settings.default.max_examples)


# -------------------------------------------------------- sparse == dense fit
def _data(rows=192, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, INPUT_DIM)) * rng.uniform(0.5, 2.0, INPUT_DIM)
            ).astype("float32")


def _build(architecture):
    # Matryoshka's prefixes: 8 and 24 of the 48 latents.
    return build_model(architecture, INPUT_DIM, LATENT_DIM)


_RUNS = {}


def _run(architecture, sparse, policy="float32", cap=None, **fit_kwargs):
    """`_train`, once per module for each set of arguments (each run is an
    XLA compile: seconds on one core); the callers only read the result."""
    key = (architecture, sparse, policy, cap, tuple(sorted(fit_kwargs.items())))
    if key not in _RUNS:
        _RUNS[key] = _train(architecture, sparse, policy, cap, **fit_kwargs)
    return _RUNS[key]


def _dense(architecture, policy="float32", **fit_kwargs):
    """The dense run of `_train`, trained once per module and reused."""
    return _run(architecture, False, policy, **fit_kwargs)


def _train(architecture, sparse, policy="float32", cap=None, epochs=1,
           sparse_kernels="auto", **fit_kwargs):
    with dtype_policy_scope(policy):
        keras.utils.set_random_seed(3)
        model = _build(architecture)
        model.compile(keras.optimizers.Adam(1e-2), jit_compile=True, sparse=sparse,
                      sparse_cap=cap, sparse_kernels=sparse_kernels)
        history = model.fit(_data(), batch_size=32, epochs=epochs, verbose=0,
                            shuffle=False, **fit_kwargs)
    state = [np.asarray(v.value) for v in model.weights]
    state += [np.asarray(v.value) for v in model.optimizer.variables]
    return model, history.history, state


FLOAT32_TOLERANCE = 2e-4
"""Float32 runs of 6 Adam steps at a learning rate of 1e-2: the two paths sum
the encoder's kernel gradient in different orders (a scatter-add against the
host's matmul kernels: AVX2 and AVX-512 builds differ), and a gradient entry
summed from terms that cancel keeps a relative error of ~1e-4 in Adam's
momentum (measured on an AVX-512 host: 3e-5 absolute on TF, 6e-5 on JAX;
under 2e-5 on an AVX2 host)."""


def _assert_same_training(dense, sparse, tolerance, counter_mismatches=0):
    """Same logs and state; `counter_mismatches`: entries of the integer state
    (dead-latent counters) that may differ (a top-k tie flipped by rounding)."""
    _, dense_logs, dense_state = dense
    model, sparse_logs, sparse_state = sparse
    assert model.sparse_plan is not None
    assert set(dense_logs) <= set(sparse_logs)
    for name, values in dense_logs.items():
        np.testing.assert_allclose(sparse_logs[name], values, rtol=tolerance,
                                   atol=tolerance, err_msg=name)
    assert len(dense_state) == len(sparse_state)
    for got, want in zip(sparse_state, dense_state):
        if np.issubdtype(want.dtype, np.integer):
            assert np.sum(got != want) <= counter_mismatches
        else:
            np.testing.assert_allclose(got.astype("float32"), want.astype("float32"),
                                       rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sparse_training_equals_dense_training(architecture):
    """An epoch (6 steps) with every slot a row can need: the weights,
    Adam's moments, the dead-latent counters, the thresholds and every
    logged term and metric come out as on the dense path."""
    dense = _dense(architecture)
    sparse = _train(architecture, True, cap=LATENT_DIM)
    _assert_same_training(dense, sparse, FLOAT32_TOLERANCE)
    if architecture in K_ARCHITECTURES:   # the AuxK term was live
        assert max(dense[1]["aux"]) > 0


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sparse_training_equals_dense_under_mixed_bfloat16(architecture):
    """Under bfloat16 the two paths round their sums differently (the sparse
    one accumulates in float32, XLA's matmul in its own order); after 6 steps
    of Adam(1e-2) the weights agree to bfloat16's precision, and a bfloat16
    tie at the top-k boundary may flip one latent's dead-step counter."""
    dense = _dense(architecture, "mixed_bfloat16")
    sparse = _train(architecture, True, "mixed_bfloat16", cap=LATENT_DIM)
    _assert_same_training(dense, sparse, 6e-2, counter_mismatches=2)


def test_the_kernels_auto_takes_are_named_and_on_jax_they_are_numba():
    """On JAX (CPU, Numba installed by the test extra) every training test of
    this file runs the Numba kernels; on TensorFlow the `keras.ops` ones."""
    model, _, _ = _run("topk", True, cap=LATENT_DIM)
    expected = "numba" if keras.backend.backend() == "jax" else "xla"
    assert model.sparse_plan.kernels == expected
    assert model.sparse_path_reason.endswith(
        "Numba kernels on every core" if expected == "numba"
        else "keras.ops kernels: the Numba kernels run under JAX only (TensorFlow's "
             "XLA step cannot call them)")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX has both kernel sets")
@pytest.mark.parametrize("architecture", ["topk", "gated"])
def test_the_keras_ops_kernels_train_as_the_dense_step_too(architecture):
    """`sparse_kernels="xla"` (what TensorFlow and GPUs run) on JAX: the same
    epoch as the dense path."""
    dense = _dense(architecture)
    sparse = _train(architecture, True, cap=LATENT_DIM, sparse_kernels="xla")
    assert sparse[0].sparse_plan.kernels == "xla"
    _assert_same_training(dense, sparse, FLOAT32_TOLERANCE)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the Numba kernels")
def test_with_the_numba_kernels_each_row_ends_at_its_own_support():
    """The `keras.ops` loops need the batch ordered by support size (one loop
    end per block of rows); the Numba loops stop row by row, so the step
    keeps the batch's order and hands them each row's support."""
    from gated_sae_layers.models.sparse_path import graph, step

    model = _build("gated")
    model.compile(keras.optimizers.Adam(), jit_compile=True, sparse=True,
                  sparse_cap=LATENT_DIM)
    x = _data()[:32]
    selection = graph.select(model, x, model.sparse_plan.slots)
    ends, same_x, _ = step._ordered(model.sparse_plan, selection, x, None)
    assert same_x is x
    np.testing.assert_array_equal(
        np.asarray(ends.active_slots),
        np.minimum(np.asarray(selection.support_sizes), model.sparse_plan.slots))


@pytest.mark.parametrize("architecture", ["gated", "relu", "jumprelu", "batch_topk"])
def test_rows_beyond_the_cap_fall_back_to_the_dense_step(architecture):
    """With fewer slots than some rows need, those batches train densely
    (counted in `sparse_fallbacks`) and the result still equals the dense
    path's."""
    dense = _dense(architecture)
    sparse = _run(architecture, True, cap=4)
    _assert_same_training(dense, sparse, FLOAT32_TOLERANCE)
    logs = sparse[1]
    assert sum(logs["sparse_fallbacks"]) > 0
    assert max(logs["max_active_latents"]) > 4


@hypothesis.settings(max_examples=FEW)
@hypothesis.given(st.sampled_from(["gated", "topk", "batch_topk"]), st.integers(1, 8),
                  st.integers(1, LATENT_DIM), st.sampled_from([16, 48, 96]))
def test_any_k_cap_and_batch_give_the_dense_result(architecture, k, cap, batch_size):
    """Over the encoder's k, the cap (small caps force the fallback) and the
    batch size (a partial last batch included), one epoch on the sparse
    path gives the dense path's weights."""
    with dtype_policy_scope("float32"):
        results = []
        for sparse in (False, True):
            keras.utils.set_random_seed(5)
            if architecture == "gated":
                model = _build("gated")
            else:
                model = gsl.build_sae(architecture, INPUT_DIM, LATENT_DIM, k=k, k_aux=6,
                                      dead_steps_threshold=1)
            model.compile(keras.optimizers.Adam(1e-2), jit_compile=True,
                          sparse=sparse, sparse_cap=cap if sparse else None)
            model.fit(_data(100), batch_size=batch_size, epochs=1, verbose=0,
                      shuffle=False)
            results.append([np.asarray(v.value) for v in model.trainable_weights])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=FLOAT32_TOLERANCE, atol=FLOAT32_TOLERANCE)


def test_the_stock_keras_loop_takes_the_sparse_path_too():
    if keras.backend.backend() != "jax":
        pytest.skip("the device-resident loop is JAX's; TF always runs the stock loop")
    dense = _dense("topk", device_resident=False)
    sparse = _train("topk", True, device_resident=False)
    _assert_same_training(dense, sparse, FLOAT32_TOLERANCE)


@pytest.mark.parametrize("architecture, sparse", [
    ("topk", True), ("gated", True), ("batch_topk", True), ("topk", False)])
def test_a_step_whose_loss_overflows_changes_nothing(architecture, sparse):
    """A finite row whose squared error overflows float32 stops `fit` at its
    step, on either path: the weights, Adam's state, the dead-latent counters
    and BatchTopK's threshold are those of the steps before."""
    x = _data(64)
    x[40] = 1e19

    with dtype_policy_scope("float32"):
        keras.utils.set_random_seed(3)
        model = _build(architecture)
        model.compile(keras.optimizers.Adam(1e-2), jit_compile=True, sparse=sparse,
                      sparse_cap=LATENT_DIM if sparse else None)
        model.optimizer.build(model.trainable_variables)
        state = model.weights + model.optimizer.variables
        start = [np.asarray(v.value) for v in state]
        # The reference: the two steps before the bad one. Then the same
        # model (one compiled step: a compile is most of the test's time)
        # goes back to its start and meets the bad row at its third step.
        model.fit(x[:32], batch_size=16, epochs=1, verbose=0, shuffle=False)
        reference = [np.asarray(v.value) for v in state]
        for variable, value in zip(state, start):
            variable.assign(value)
        with pytest.raises(ValueError, match="NaN or Inf"):
            model.fit(x, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert int(np.asarray(model.optimizer.iterations.value)) == 2
    for variable, want in zip(state, reference):
        np.testing.assert_allclose(np.asarray(variable.value), want,
                                   rtol=1e-5, atol=1e-6, err_msg=variable.path)


def test_a_sparse_trained_model_saves_and_loads(tmp_path):
    model, _, _ = _run("gated", True, cap=4)     # trained by the fallback test
    path = tmp_path / "sparse.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = _data(8, seed=9)
    for name, value in model.predict_on_batch(x).items():
        np.testing.assert_allclose(loaded.predict_on_batch(x)[name], value, atol=1e-6)
    loaded.fit(x, batch_size=4, epochs=1, verbose=0)


def test_the_sparse_step_holds_one_latent_wide_tensor_where_dense_holds_several():
    """XLA's buffer assignment of the compiled loop, from models with no memory
    behind their weights (`shapes_only_model`)."""
    if keras.backend.backend() != "jax":
        pytest.skip("train_step_memory compiles the JAX loop")
    import jax

    def live_bytes():
        return sum(array.nbytes for array in jax.live_arrays())

    batch, latents = 256, 65536
    one = batch * latents * 4          # one (batch, latent_dim) float32 tensor
    memory = {}
    for sparse in (False, True):
        before = live_bytes()
        model = gsl.shapes_only_model(lambda: gsl.build_topk_sae(64, latents, k=8),
                                      keras.optimizers.Adam(), sparse=sparse)
        assert live_bytes() - before < 2**20     # the weights alone are 32 MiB
        memory[sparse] = gsl.train_step_memory(model, batch, chunk_rows=batch)
    assert memory[False]["temp_bytes"] > 3 * one
    assert memory[True]["temp_bytes"] < memory[False]["temp_bytes"] - 2 * one


# ------------------------------------------------------------------ switch
def test_auto_keeps_small_dictionaries_dense_and_says_why():
    model = _build("topk")
    model.compile(keras.optimizers.Adam(), jit_compile=True)
    assert model.sparse_plan is None
    assert "latent_dim=48" in model.sparse_path_reason
    big = gsl.build_sae("topk", 8, 2048, k=8)
    big.compile(keras.optimizers.Adam(), jit_compile=True)
    assert big.sparse_plan is not None and big.sparse_plan.slots == 8


def test_auto_keeps_tensorflow_without_xla_dense():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow's choice")
    model = gsl.build_sae("topk", 8, 2048, k=8)
    model.compile(keras.optimizers.Adam(), jit_compile=False)
    assert model.sparse_plan is None and "XLA" in model.sparse_path_reason


def _with_extra_latent_layer():
    activations, decoder, centered = assembly.sae_input_and_decoder(
        INPUT_DIM, LATENT_DIM)
    latents = gsl.TopKEncoder(LATENT_DIM, 3, name="encoder")(centered)["latents"]
    scaled = keras.layers.Rescaling(2.0)(latents)
    return gsl.SparseAutoencoder(
        inputs=activations,
        outputs={"reconstruction": decoder(scaled), "latents": latents},
        loss_terms={"reconstruction": gsl.ReconstructionLoss()})


def test_a_graph_the_sparse_path_cannot_run_is_refused_by_name():
    model = _with_extra_latent_layer()
    with pytest.raises(ValueError, match=r"rescaling.*no sparse form"):
        model.compile(keras.optimizers.Adam(), sparse=True)
    model.compile(keras.optimizers.Adam(), sparse="auto")
    assert model.sparse_plan is None and "no sparse form" in model.sparse_path_reason


def test_a_metric_without_sparse_support_is_refused_by_name():
    activations, decoder, centered = assembly.sae_input_and_decoder(
        INPUT_DIM, LATENT_DIM)
    latents = gsl.TopKEncoder(LATENT_DIM, 3, name="encoder")(centered)["latents"]
    model = gsl.SparseAutoencoder(
        inputs=activations,
        outputs={"reconstruction": decoder(latents), "latents": latents},
        loss_terms={"reconstruction": gsl.ReconstructionLoss()},
        metric_terms={"latents": [keras.metrics.Mean(name="mean_latent")]})
    with pytest.raises(ValueError, match="mean_latent"):
        model.compile(keras.optimizers.Adam(), sparse=True)


@pytest.mark.parametrize("sparse, cap, error", [
    ("yes", None, ValueError), (1, None, ValueError), (True, 0, ValueError),
    (True, 2.5, TypeError)])
def test_bad_switch_arguments_raise(sparse, cap, error):
    model = _build("topk")
    with pytest.raises(error):
        model.compile(keras.optimizers.Adam(), sparse=sparse, sparse_cap=cap)


@pytest.mark.parametrize("kernels", ["fast", True, None])
def test_bad_kernel_choices_raise(kernels):
    model = _build("topk")
    with pytest.raises(ValueError, match="`sparse_kernels` must be 'auto', 'numba' or 'xla'"):
        model.compile(keras.optimizers.Adam(), sparse_kernels=kernels)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's refusal")
def test_numba_kernels_are_refused_on_tensorflow_by_name():
    model = _build("topk")
    with pytest.raises(ValueError, match="sparse_kernels='numba'.*JAX only"):
        model.compile(keras.optimizers.Adam(), jit_compile=True, sparse=True,
                      sparse_kernels="numba")


# ---------------------------------------------------------------------- cap
def test_the_cap_is_measured_on_the_data_and_adapted_each_epoch():
    keras.utils.set_random_seed(3)
    model = gsl.build_sae("relu", INPUT_DIM, 1024, sparsity_coefficient=1e-2)
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=True, sparse=True)
    plan = model.sparse_plan
    assert plan.cap == sparse_plan.DEFAULT_CAP and not plan.calibrated
    x = _data(256)
    largest = int((np.asarray(model.encode(x)) > 0).sum(axis=1).max())
    history = model.fit(x, batch_size=64, epochs=2, verbose=0).history
    assert plan.calibrated
    # Half the latents fire at the tied initialization: a dense phase.
    assert largest > 1024 * sparse_plan.DENSE_PHASE_FRACTION
    assert plan.cap == 0 and plan.slots == 0
    assert history["sparse_fallbacks"] == [4.0, 4.0]


def test_the_tuner_lowers_and_raises_the_cap():
    model = gsl.build_sae("gated", INPUT_DIM, 4096, sparsity_coefficient=1e-2)
    model.compile(keras.optimizers.Adam(), jit_compile=True, sparse=True)
    tuner = sparse_cap.SparseCapTuner()
    tuner.set_model(model)
    tuner.set_params({"steps": 10})
    tuner.on_epoch_end(0, {"max_active_latents": 20.0, "sparse_fallbacks": 0.0})
    assert model.sparse_plan.cap == 32          # 64 -> 32: 20 fits in half
    tuner.on_epoch_end(1, {"max_active_latents": 30.0, "sparse_fallbacks": 1.0})
    assert model.sparse_plan.cap == 48          # 10% of the steps fell back
    tuner.on_epoch_end(2, {"max_active_latents": 33.0, "sparse_fallbacks": 0.0})
    assert model.sparse_plan.cap == 48          # no fallback, 42 > 48 / 2
    assert [change[1:] for change in tuner.changes] == [(64, 32), (32, 48)]
    tuner.on_epoch_end(3, {"max_active_latents": 500.0, "sparse_fallbacks": 9.0})
    assert model.sparse_plan.cap == 0           # above 4096 / 32: a dense phase
    tuner.on_epoch_end(4, {"max_active_latents": 400.0, "sparse_fallbacks": 10.0})
    assert len(tuner.changes) == 3              # still dense: no recompile
    tuner.on_epoch_end(5, {"max_active_latents": 60.0, "sparse_fallbacks": 10.0})
    assert model.sparse_plan.cap == 80          # back once the support is small
    assert [change[1:] for change in tuner.changes][2:] == [(48, 0), (0, 80)]
