"""The sparse path's pieces against numpy and dense autodiff (TF here, JAX in the JAX leg).

The slot kernels and their gradients, the selections (support, the exact
two-stage top-k, BatchTopK's per-row layout), `SparseLatents` and the
metrics that read it. The training path built on them:
`tests/test_sparse_training.py`.
"""

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers.sparse import (
    SparseLatents,
    gather_vector,
    gathered_product,
    sparse_decode,
    support_indices,
)
from gated_sae_layers.sparse.selection import rows_of_flat_entries, top_k_indices
from tests.backend_grad import gradients

FEW = min(3, hypothesis.settings.default.max_examples)
SOME = min(8, hypothesis.settings.default.max_examples)


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


@hypothesis.settings(max_examples=SOME)
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


@hypothesis.given(st.integers(1, 6), st.integers(1, 70), st.integers(0, 70),
                  st.floats(0.0, 1.0), st.integers(0, 2**16))
def test_support_indices_hold_every_positive_score(rows, latents, cap, dropped, seed):
    """The support first, in latent order, then distinct latents outside it
    (widths across several 16-latent words, not multiples of 16); a support
    larger than `cap` keeps its first `cap` latents and reports the overflow."""
    cap = min(cap, latents)
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(rows, latents)).astype("float32")
    scores[rng.random(scores.shape) < dropped] = 0.0   # ties at zero
    indices, counts, overflow = (np.asarray(t) for t in support_indices(scores, cap))
    np.testing.assert_array_equal(counts, (scores > 0).sum(axis=1))
    assert bool(overflow) == bool((counts > cap).any())
    assert indices.shape == (rows, cap)
    for row in range(rows):
        support = np.flatnonzero(scores[row] > 0)
        if counts[row] <= cap:
            np.testing.assert_array_equal(indices[row, :counts[row]], support)
            rest = indices[row, counts[row]:]
            assert len(set(indices[row])) == cap and np.all(scores[row, rest] <= 0)
            np.testing.assert_array_equal(rest, np.sort(rest))
        else:
            np.testing.assert_array_equal(indices[row], support[:cap])
        assert np.all((indices[row] >= 0) & (indices[row] < latents))


@pytest.mark.parametrize("latents, cap", [(300, 40), (1000, 200), (4096, 112)])
def test_support_indices_over_many_groups_of_words(latents, cap):
    """Rows of many 16-word groups (the last one partial): the same layout."""
    rng = np.random.default_rng(latents)
    scores = rng.normal(size=(16, latents)).astype("float32") - rng.uniform(
        1.0, 3.0, size=(16, 1)).astype("float32")
    scores[0] = -1.0                              # an empty support
    scores[1, -cap // 2:] = 1.0                   # the support at the very end
    indices, counts, _ = (np.asarray(t) for t in support_indices(scores, cap))
    for row in range(len(scores)):
        support = np.flatnonzero(scores[row] > 0)
        if len(support) > cap:
            np.testing.assert_array_equal(indices[row], support[:cap])
            continue
        outside = np.flatnonzero(scores[row] <= 0)[:cap - len(support)]
        np.testing.assert_array_equal(indices[row], np.concatenate([support, outside]))


@hypothesis.settings(max_examples=SOME)
@hypothesis.given(slot_problems(), st.integers(0, 3), st.integers(0, 2**16))
def test_loops_stop_at_the_active_slots(problem, blocks, seed):
    """Slots past `active_slots` (one end for all rows, or one per block of
    rows) whose values and upstream gradients are 0 (entries outside every
    row's support) change nothing when skipped; nonzero ones there are not
    decoded."""
    x, w_enc, w_dec, bias, indices, upstream = problem
    rows, slots = indices.shape
    rng = np.random.default_rng(seed)
    if blocks == 0:
        ends = np.array(rng.integers(0, slots + 1), "int32")
        row_ends = np.full(rows, ends)
    else:
        ends = rng.integers(0, slots + 1, size=blocks).astype("int32")
        size = -(-rows // blocks)
        row_ends = np.array([ends[row // size] for row in range(rows)])
    keep = (np.arange(slots)[None, :] < row_ends[:, None]).astype("float32")
    variables = [keras.Variable(v) for v in (x, w_enc, w_dec)]

    def loss(active_slots):
        x_, w_enc_, w_dec_ = (v.value for v in variables)
        z = gathered_product(x_, w_enc_, indices, keras.ops.matmul(x_, w_enc_),
                             active_slots=active_slots)
        values = keras.ops.relu(z) * keep
        decoded = sparse_decode(values, indices, w_dec_, "float32",
                                active_slots=active_slots)
        return keras.ops.sum(decoded * upstream)

    bound = keras.ops.convert_to_tensor(ends, "int32")
    weights = np.ones(indices.shape, "float32")
    np.testing.assert_allclose(
        np.asarray(sparse_decode(weights, indices, w_dec, "float32", active_slots=bound)),
        ((weights * keep)[:, :, None] * w_dec[indices]).sum(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(loss(bound)), float(loss(None)), rtol=1e-5, atol=1e-5)
    for got, want in zip(gradients(lambda: loss(bound), variables),
                         gradients(lambda: loss(None), variables)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@hypothesis.settings(max_examples=SOME)
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


@hypothesis.settings(max_examples=FEW)
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
