"""The sparse training path (`compile(sparse=...)`) equals the dense step.

Kernels against numpy and dense autodiff; for every architecture, a few
epochs on the sparse path against the same epochs on the dense path
(weights, optimizer state, every logged term and metric), in float32 and
under `mixed_bfloat16`, with caps that force the dense fallback; the
switch's choices and errors; the adaptive cap. Runs on TensorFlow here and
on JAX in `tests/test_jax_training.py`.
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
from gated_sae_layers.sparse import (
    SparseLatents,
    gather_vector,
    gathered_product,
    sparse_decode,
    support_indices,
)
from gated_sae_layers.sparse.selection import rows_of_flat_entries, top_k_indices
from tests.backend_grad import gradients
from tests.harness import dtype_policy_scope

INPUT_DIM, LATENT_DIM = 12, 48
K_ARCHITECTURES = ("topk", "batch_topk", "matryoshka")
ARCHITECTURES = ("gated", "relu", "jumprelu") + K_ARCHITECTURES


# ------------------------------------------------------------------ kernels
@st.composite
def slot_problems(draw):
    rows = draw(st.integers(1, 5))
    width = draw(st.integers(1, 4))
    latents = draw(st.integers(2, 10))
    slots = draw(st.integers(1, latents))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    indices = np.stack([rng.permutation(latents)[:slots] for _ in range(rows)])
    return (rng.normal(size=(rows, width)).astype("float32"),
            rng.normal(size=(width, latents)).astype("float32"),
            rng.normal(size=(latents, width)).astype("float32"),
            rng.normal(size=(latents,)).astype("float32"),
            indices.astype("int32"), rng.normal(size=(rows, width)).astype("float32"))


def _mask(indices, latents):
    mask = np.zeros((indices.shape[0], latents), "float32")
    np.put_along_axis(mask, indices, 1.0, axis=1)
    return mask


@hypothesis.settings(max_examples=12)
@hypothesis.given(slot_problems())
def test_slot_kernels_equal_the_dense_math_and_its_gradients(problem):
    """Encode-at-slots, decode-from-slots and their gradients equal the dense
    matmuls on the same entries (numpy forward, backend autodiff backward)."""
    x, w_enc, w_dec, bias, indices, upstream = problem
    latents = w_enc.shape[1]
    mask = _mask(indices, latents)
    variables = [keras.Variable(v) for v in (x, w_enc, w_dec, bias)]

    def sparse_loss():
        x_, w_enc_, w_dec_, bias_ = (v.value for v in variables)
        z = gathered_product(x_, w_enc_, indices, keras.ops.matmul(x_, w_enc_))
        values = keras.ops.relu(z + gather_vector(bias_, indices))
        decoded = sparse_decode(values, indices, w_dec_, "float32")
        return keras.ops.sum(decoded * upstream) + keras.ops.sum(values ** 2)

    def dense_loss():
        x_, w_enc_, w_dec_, bias_ = (v.value for v in variables)
        values = keras.ops.relu(keras.ops.matmul(x_, w_enc_) + bias_) * mask
        decoded = keras.ops.matmul(values, w_dec_)
        return keras.ops.sum(decoded * upstream) + keras.ops.sum(values ** 2)

    values = np.take_along_axis(np.maximum(x @ w_enc + bias, 0), indices, axis=1)
    expected = (values[:, :, None] * w_dec[indices]).sum(axis=1)
    decoded = sparse_decode(values, indices, w_dec, "float32")
    np.testing.assert_allclose(np.asarray(decoded), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(sparse_loss()), float(dense_loss()),
                               rtol=1e-5, atol=1e-5)
    for got, want in zip(gradients(sparse_loss, variables),
                         gradients(dense_loss, variables)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_frozen_decode_passes_no_gradient_to_the_kernel():
    kernel = keras.Variable(np.ones((4, 3), "float32"))
    values = keras.Variable(np.ones((2, 2), "float32"))
    indices = np.array([[0, 1], [2, 3]], "int32")
    kernel_grad, values_grad = gradients(
        lambda: keras.ops.sum(sparse_decode(values.value, indices, kernel.value,
                                            "float32", kernel_trainable=False)),
        [kernel, values])
    assert not np.any(kernel_grad)
    np.testing.assert_allclose(values_grad, np.full((2, 2), 3.0))


@hypothesis.given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 9),
                  st.integers(0, 2**16))
def test_support_indices_hold_every_positive_score(rows, latents, cap, seed):
    cap = min(cap, latents)
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(rows, latents)).astype("float32")
    scores[rng.random(scores.shape) < 0.5] = 0.0   # ties at zero
    indices, counts, overflow = (np.asarray(t) for t in support_indices(scores, cap))
    np.testing.assert_array_equal(counts, (scores > 0).sum(axis=1))
    assert bool(overflow) == bool((counts > cap).any())
    assert indices.shape == (rows, cap)
    for row in range(rows):
        if counts[row] <= cap:
            assert set(np.flatnonzero(scores[row] > 0)) <= set(indices[row])


@hypothesis.settings(max_examples=12)
@hypothesis.given(st.integers(1, 6), st.integers(1, 8), st.integers(0, 8),
                  st.integers(0, 2**16))
def test_flat_entries_are_laid_out_per_row_in_latent_order(rows, latents, slots, seed):
    rng = np.random.default_rng(seed)
    count = rng.integers(0, rows * latents + 1)
    flat = rng.permutation(rows * latents)[:count].astype("int32")
    keep = rng.random(count) < 0.8
    indices, valid, sizes = (np.asarray(t) for t in rows_of_flat_entries(
        flat, keep, rows, latents, slots))
    assert indices.shape == valid.shape == (rows, slots)
    for row in range(rows):
        wanted = sorted(f % latents for f, k in zip(flat, keep) if k and f // latents == row)
        assert sizes[row] == len(wanted)
        assert indices[row][valid[row]].tolist() == wanted[:slots]


@hypothesis.settings(max_examples=6)
@hypothesis.given(st.integers(1, 3), st.sampled_from([8192, 16384]),
                  st.sampled_from([1, 8, 32]), st.integers(0, 2**16))
def test_the_two_stage_top_k_picks_the_dense_top_k_ties_included(rows, width, k, seed):
    """Wide rows take the two-stage top-k; with many tied scores it picks the
    very set one `ops.top_k` picks (ties: the lower latent wins)."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=(rows, width)), 1).astype("float32")
    picked = np.sort(np.asarray(top_k_indices(scores, k)), axis=1)
    dense = np.sort(np.asarray(keras.ops.top_k(scores, k, sorted=False)[1]), axis=1)
    np.testing.assert_array_equal(picked, dense)


def test_sparse_latents_densify_and_count():
    latents = SparseLatents(np.array([[0.5, 0.0, 2.0]], "float32"),
                            np.array([[4, 1, 0]], "int32"), latent_dim=5)
    assert latents.shape == (1, 5)
    np.testing.assert_array_equal(np.asarray(latents.to_dense()),
                                  [[2.0, 0.0, 0.0, 0.0, 0.5]])
    np.testing.assert_array_equal(np.asarray(latents.fired_counts()), [1, 0, 0, 0, 1])
    metric = gsl.DeadFeatures(5)
    metric.update_state(None, latents)
    assert float(metric.result()) == 3.0
    l0 = gsl.L0()
    l0.update_state(None, latents)
    assert float(l0.result()) == 2.0


# -------------------------------------------------------- sparse == dense fit
def _data(rows=192, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, INPUT_DIM)) * rng.uniform(0.5, 2.0, INPUT_DIM)
            ).astype("float32")


def _build(architecture):
    if architecture in K_ARCHITECTURES:
        kwargs = {"k": 3, "k_aux": 6, "dead_steps_threshold": 2}
        if architecture == "matryoshka":
            kwargs["prefix_sizes"] = [8, 24]
    elif architecture == "jumprelu":
        kwargs = {"sparsity_coefficient": 1e-2, "initial_threshold": 0.05,
                  "bandwidth": 0.5}
    else:
        kwargs = {"sparsity_coefficient": 3e-2}
    return gsl.build_sae(architecture, INPUT_DIM, LATENT_DIM, **kwargs)


def _train(architecture, sparse, policy="float32", cap=None, epochs=2, **fit_kwargs):
    with dtype_policy_scope(policy):
        keras.utils.set_random_seed(3)
        model = _build(architecture)
        model.compile(keras.optimizers.Adam(1e-2), jit_compile=True, sparse=sparse,
                      sparse_cap=cap)
        history = model.fit(_data(), batch_size=32, epochs=epochs, verbose=0,
                            shuffle=False, **fit_kwargs)
    state = [np.asarray(v.value, "float32") for v in model.weights]
    state += [np.asarray(v.value, "float32") for v in model.optimizer.variables]
    return model, history.history, state


def _assert_same_training(dense, sparse, tolerance):
    _, dense_logs, dense_state = dense
    model, sparse_logs, sparse_state = sparse
    assert model.sparse_plan is not None
    assert set(dense_logs) <= set(sparse_logs)
    for name, values in dense_logs.items():
        np.testing.assert_allclose(sparse_logs[name], values, rtol=tolerance,
                                   atol=tolerance, err_msg=name)
    assert len(dense_state) == len(sparse_state)
    for got, want in zip(sparse_state, dense_state):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sparse_training_equals_dense_training(architecture):
    """Two epochs (12 steps) with every slot a row can need: the weights,
    Adam's moments, the dead-latent counters, the thresholds and every
    logged term and metric come out as on the dense path."""
    dense = _train(architecture, False)
    sparse = _train(architecture, True, cap=LATENT_DIM)
    _assert_same_training(dense, sparse, 2e-5)
    if architecture in K_ARCHITECTURES:   # the AuxK term was live
        assert max(dense[1]["aux"]) > 0


@pytest.mark.parametrize("architecture", ["gated", "batch_topk"])
def test_sparse_training_equals_dense_under_mixed_bfloat16(architecture):
    dense = _train(architecture, False, "mixed_bfloat16")
    sparse = _train(architecture, True, "mixed_bfloat16", cap=LATENT_DIM)
    _assert_same_training(dense, sparse, 2e-2)


@pytest.mark.parametrize("architecture", ["gated", "relu", "jumprelu", "batch_topk"])
def test_rows_beyond_the_cap_fall_back_to_the_dense_step(architecture):
    """With fewer slots than some rows need, those batches train densely
    (counted in `sparse_fallbacks`) and the result still equals the dense
    path's."""
    dense = _train(architecture, False)
    sparse = _train(architecture, True, cap=4)
    _assert_same_training(dense, sparse, 2e-5)
    logs = sparse[1]
    assert sum(logs["sparse_fallbacks"]) > 0
    assert max(logs["max_active_latents"]) > 4


@hypothesis.settings(max_examples=5)
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
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_the_stock_keras_loop_takes_the_sparse_path_too():
    if keras.backend.backend() != "jax":
        pytest.skip("the device-resident loop is JAX's; TF always runs the stock loop")
    dense = _train("topk", False, device_resident=False)
    sparse = _train("topk", True, device_resident=False)
    _assert_same_training(dense, sparse, 2e-5)


def test_a_sparse_trained_model_saves_and_loads(tmp_path):
    model, _, _ = _train("gated", True, cap=16, epochs=1)
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
    model = gsl.build_sae("gated", INPUT_DIM, 1024, sparsity_coefficient=1e-2)
    model.compile(keras.optimizers.Adam(), jit_compile=True, sparse=True)
    tuner = sparse_cap.SparseCapTuner()
    tuner.set_model(model)
    tuner.set_params({"steps": 10})
    tuner.on_epoch_end(0, {"max_active_latents": 20.0, "sparse_fallbacks": 0.0})
    assert model.sparse_plan.cap == 32          # 64 -> 32: 20 fits in half
    tuner.on_epoch_end(1, {"max_active_latents": 30.0, "sparse_fallbacks": 1.0})
    assert model.sparse_plan.cap == 64          # 10% of the steps fell back
    tuner.on_epoch_end(2, {"max_active_latents": 40.0, "sparse_fallbacks": 0.0})
    assert model.sparse_plan.cap == 64
    assert [change[1:] for change in tuner.changes] == [(64, 32), (32, 64)]
