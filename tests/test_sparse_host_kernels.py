"""The sparse path's Numba kernels (`gated_sae_layers.sparse.host`) against numpy and
against the `keras.ops` kernels they replace, on the JAX leg.

Each loop as XLA calls it (`jax.ffi`): the top-k picks the set `jax.lax.top_k`
picks (ties, infinities, signed zeros, NaN rows), the gathers and the
scatter-add equal numpy with per-row ends, and the slot kernels' gradients
equal the `keras.ops` kernels'. Training with them equals the dense step:
`tests/test_sparse_training.py` (on JAX `sparse_kernels="auto"` takes them).
"""

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest

from gated_sae_layers.models.sparse_path import plan as sparse_plan
from gated_sae_layers.sparse import gathered_product, host, sparse_decode
from gated_sae_layers.sparse.selection import top_k_indices
from gated_sae_layers.sparse.support import support_indices
from tests.backend_grad import gradients

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="the Numba kernels run under JAX")

SOME = min(10, hypothesis.settings.default.max_examples)


def _jit(function):
    import jax

    def traced(*args):
        with host.using(True):
            return function(*args)

    return jax.jit(traced)


def test_the_kernels_load_here():
    """CI installs Numba with the test extra: the loops must load, or every
    other test here would check nothing."""
    assert host.unavailable_reason() is None
    assert sparse_plan.choose_kernels("auto")[0] == "numba"


@hypothesis.settings(max_examples=SOME)
@hypothesis.given(st.integers(1, 9), st.integers(1, 300), st.integers(1, 40),
                  st.sampled_from(["normal", "ties", "zeros", "infinities"]),
                  st.integers(0, 2**16))
def test_top_k_picks_the_set_lax_top_k_picks(rows, width, k, kind, seed):
    """Any width (below and above the 32-latent blocks' reach, not a multiple
    of 32), any k, rows of many ties (the lower index wins), of signed zeros
    (+0 ranks above -0), with infinities, and with NaN (ranked above +inf,
    -NaN below -inf, as XLA ranks them)."""
    import jax

    k = min(k, width)
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(rows, width)).astype("float32")
    if kind == "ties":
        scores = np.round(scores, 0).astype("float32")
    elif kind == "zeros":
        scores = np.where(rng.random(scores.shape) < 0.5, 0.0, -0.0).astype("float32")
        scores[:, ::3] = rng.normal(size=scores[:, ::3].shape)
    elif kind == "infinities":
        scores[rng.random(scores.shape) < 0.1] = np.inf
        scores[rng.random(scores.shape) < 0.1] = -np.inf
        scores[rng.random(scores.shape) < 0.05] = np.nan
        scores[rng.random(scores.shape) < 0.05] = -np.nan
    picked = np.asarray(_jit(lambda s: top_k_indices(s, k))(scores))
    assert picked.dtype == np.int32 and picked.shape == (rows, k)
    expected = np.asarray(jax.lax.top_k(scores, k)[1])
    np.testing.assert_array_equal(np.sort(picked, axis=1), np.sort(expected, axis=1))


def test_a_row_with_a_nan_takes_its_nan_entries_first():
    """As XLA's `top_k` ranks NaN highest: the step's loss is then NaN on
    both kernel sets, and the non-finite guard skips that step."""
    scores = np.arange(40, dtype="float32").reshape(2, 20)
    scores[0, [3, 17]] = np.nan
    picked = np.asarray(_jit(lambda s: top_k_indices(s, 4))(scores))
    np.testing.assert_array_equal(np.sort(picked[0]), [3, 17, 18, 19])
    np.testing.assert_array_equal(np.sort(picked[1]), [16, 17, 18, 19])


@hypothesis.settings(max_examples=SOME)
@hypothesis.given(st.integers(1, 9), st.integers(1, 300), st.integers(0, 300),
                  st.sampled_from(["normal", "zeros", "infinities"]), st.booleans(),
                  st.integers(0, 2**16))
def test_support_loop_equals_numpy_and_the_keras_ops_search(rows, width, cap, kind,
                                                            with_bias, seed):
    """The slots of `scores + bias > 0` (the gated, ReLU and JumpReLU selection):
    the support in increasing order, then latents outside it in increasing
    order; the counts; the overflow flag. Any width and cap (0 to the width),
    signed zeros (not > 0), infinities and NaN (not > 0)."""
    import jax

    cap = min(cap, width)
    rng = np.random.default_rng(seed)
    scores = (rng.normal(size=(rows, width)) - 1.0).astype("float32")
    if kind == "zeros":
        scores = np.where(rng.random(scores.shape) < 0.5, 0.0, -0.0).astype("float32")
        scores[:, ::5] = rng.normal(size=scores[:, ::5].shape)
    elif kind == "infinities":
        for value, share in ((np.inf, 0.05), (-np.inf, 0.05), (np.nan, 0.05)):
            scores[rng.random(scores.shape) < share] = value
    bias = rng.normal(size=(width,)).astype("float32") if with_bias else None
    args = (scores,) if bias is None else (scores, bias)

    def search(*args):
        return support_indices(args[0], cap, *args[1:])

    indices, counts, overflow = (np.asarray(t) for t in _jit(search)(*args))
    summed = scores if bias is None else scores + bias
    for row, (index_row, count) in enumerate(zip(indices, counts)):
        support = np.flatnonzero(summed[row] > 0)
        outside = np.flatnonzero(~(summed[row] > 0))
        assert count == len(support)
        np.testing.assert_array_equal(index_row, np.concatenate([support, outside])[:cap])
    assert bool(overflow) == bool((counts > cap).any())
    for got, expected in zip((indices, counts, overflow), jax.jit(search)(*args)):
        np.testing.assert_array_equal(got, np.asarray(expected))


@st.composite
def gather_problems(draw):
    rows = draw(st.integers(1, 12))
    slots = draw(st.integers(1, 8))
    table_rows = draw(st.integers(1, 300))   # past one task of `scatter_columns`
    width = draw(st.integers(1, 40))
    blocks = draw(st.integers(0, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    indices = rng.integers(0, table_rows, size=(rows, slots)).astype("int32")
    if blocks == 0:
        ends = None if draw(st.booleans()) else np.int32(rng.integers(0, slots + 1))
    else:
        ends = rng.integers(0, slots + 1, size=blocks).astype("int32")
    return (rng.normal(size=(table_rows, width)).astype("float32"), indices,
            rng.normal(size=(rows, slots)).astype("float32"),
            rng.normal(size=(rows, width)).astype("float32"), ends)


def _row_ends(rows, slots, ends):
    if ends is None:
        return np.full(rows, slots)
    ends = np.minimum(np.asarray(ends), slots)
    if ends.ndim == 0:
        return np.full(rows, int(ends))
    size = -(-rows // len(ends))
    return np.array([ends[row // size] for row in range(rows)])


@hypothesis.settings(max_examples=SOME)
@hypothesis.given(gather_problems())
def test_gathers_and_the_scatter_add_equal_numpy(problem):
    """Per-row ends (none, one for all rows, one per block of rows); indices
    repeated within and across rows (the scatter-add sums them); the
    transposed scatter-add equals the other one's transpose bit for bit."""
    table, indices, weights, vectors, ends = problem
    rows, slots = indices.shape
    keep = np.arange(slots)[None, :] < _row_ends(rows, slots, ends)[:, None]
    kept = np.where(keep, weights, 0.0)
    summed = _jit(lambda t, i, w: host.weighted_row_sum(t, i, w, ends))(
        table, indices, weights)
    np.testing.assert_allclose(np.asarray(summed),
                               (kept[:, :, None] * table[indices]).sum(axis=1),
                               rtol=1e-5, atol=1e-5)
    dots = _jit(lambda t, i, v: host.row_dots(t, i, v, ends))(table, indices, vectors)
    np.testing.assert_allclose(np.asarray(dots),
                               np.where(keep, (table[indices] * vectors[:, None]).sum(-1), 0),
                               rtol=1e-5, atol=1e-5)
    scattered = _jit(lambda i, w, v: host.scatter_rows(i, w, v, table.shape[0], ends))(
        indices, weights, vectors)
    expected = np.zeros(table.shape, "float32")
    np.add.at(expected, indices.reshape(-1),
              (kept[:, :, None] * vectors[:, None, :]).reshape(-1, table.shape[1]))
    np.testing.assert_allclose(np.asarray(scattered), expected, rtol=1e-5, atol=1e-5)
    columns = _jit(lambda i, w, v: host.scatter_columns(i, w, v, table.shape[0], ends))(
        indices, weights, vectors)
    np.testing.assert_array_equal(np.asarray(columns), np.asarray(scattered).T)


@hypothesis.settings(max_examples=SOME)
@hypothesis.given(st.integers(1, 6), st.integers(2, 30), st.integers(1, 6),
                  st.integers(0, 2**16))
def test_slot_kernels_give_the_gradients_of_the_keras_ops_kernels(rows, latents, k, seed):
    """Encode-at-slots and decode-from-slots, forward and backward: the
    Numba loops against the `keras.ops` loops, on the same slots."""
    import jax

    k = min(k, latents)
    rng = np.random.default_rng(seed)
    width = int(rng.integers(1, 9))
    x, w_enc, w_dec = (rng.normal(size=shape).astype("float32") for shape in
                       ((rows, width), (width, latents), (latents, width)))
    upstream = rng.normal(size=(rows, width)).astype("float32")
    variables = [keras.Variable(v) for v in (x, w_enc, w_dec)]

    def loss():
        x_, w_enc_, w_dec_ = (v.value for v in variables)
        product = keras.ops.matmul(x_, w_enc_)
        indices = top_k_indices(jax.lax.stop_gradient(product), k)
        values = keras.ops.relu(gathered_product(x_, w_enc_, indices, product))
        decoded = sparse_decode(values, indices, w_dec_, "float32")
        return keras.ops.sum(decoded * upstream) + keras.ops.sum(values ** 2)

    def with_kernels(numba):
        def run():
            with host.using(numba):
                return gradients(loss, variables)
        return run()

    for got, want in zip(with_kernels(True), with_kernels(False)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_without_numba_auto_keeps_the_keras_ops_kernels_and_numba_is_refused(
        monkeypatch):
    reason = "Numba is not installed (pip install gated-sae-layers[jax])"
    monkeypatch.setattr(host, "unavailable_reason", lambda: reason)
    assert sparse_plan.choose_kernels("auto") == ("xla", f"keras.ops kernels: {reason}")
    with pytest.raises(ValueError, match="sparse_kernels='numba'.*Numba is not installed"):
        sparse_plan.choose_kernels("numba")
