"""The sparse path's kernels as compiled CPU loops, called from a JAX step.

XLA on a CPU runs each of the sparse step's gathers, scatters and its
`top_k` on one thread, one `(rows, width)` slab per slot (`kernels`); on
two cores that made the TopK step slower than PyTorch's sparsify, whose
kernels split the rows over every core. These are the same operations as
Numba loops that do the same: one pass over each row's slots, rows (or,
for a scatter, destination rows) shared out over the cores, a top-k that
needs no sort, and a support search (`support.support_indices`) that is
one pass over each row. XLA calls them as typed FFI handlers (`jax.ffi.ffi_call`:
C functions that read their buffers from XLA's call frame, with no Python
or GIL on the way) wherever `kernels` and `selection` are traced while
`using(True)` is in effect (`compile(sparse_kernels=...)`,
`models/sparse_path/plan.py`); they ask `active()`.

Each one equals its `keras.ops` version: the same slots summed in the same
order for `weighted_row_sum` and `scatter_rows` (float32 throughout), a
dot product summed in another order for `row_dots` (float rounding), and
for `top_k_indices` the very set `jax.lax.top_k` picks: it ranks floats in
XLA's total order (-NaN < -inf < ... < -0 < +0 < ... < +inf < NaN), ties
to the lower index; `support_indices` gives the same slots and counts.
They take float32 only: `active()` is false for any other compute dtype
(under `mixed_bfloat16` the top-k, the support search and the gathers of
bfloat16 tables stay `keras.ops` loops).

Numba is optional (`pip install gated-sae-layers[jax]` installs it);
`unavailable_reason()` says why the loops cannot run, or `None`. They
compile on first use and Numba caches them on disk.
"""

import contextlib
import contextvars

import numpy as np

_USING = contextvars.ContextVar("gated_sae_layers_host_kernels", default=False)
_KERNELS = None


_UNAVAILABLE = []


def unavailable_reason():
    """Why the loops cannot run in this process (a sentence), or `None`.

    The first call imports Numba, compiles the loops (seconds; later
    processes load them from Numba's cache), registers them with XLA and
    checks one `top_k` against `jax.lax.top_k`.
    """
    if not _UNAVAILABLE:
        _UNAVAILABLE.append(_check())
    return _UNAVAILABLE[0]


def _check():
    try:
        import numba  # noqa: F401
    except ImportError:
        return "Numba is not installed (pip install gated-sae-layers[jax])"
    try:
        import jax
        import jax.numpy as jnp

        scores = jnp.asarray(np.random.default_rng(0).normal(size=(3, 257)), jnp.float32)
        with using(True):
            picked = jax.jit(lambda s: top_k_indices(s, 5))(scores)
        expected = jax.lax.top_k(scores, 5)[1]
        if not np.array_equal(np.sort(np.asarray(picked), axis=1),
                              np.sort(np.asarray(expected), axis=1)):
            return "the Numba top-k disagreed with jax.lax.top_k on a check"
    except Exception as error:  # an old jax without `jax.ffi`, no thread-safe layer, ...
        return f"the Numba kernels failed to load ({type(error).__name__}: {error})"
    return None


@contextlib.contextmanager
def using(enabled):
    """Within this block, the sparse kernels traced for JAX call the host loops."""
    token = _USING.set(bool(enabled))
    try:
        yield
    finally:
        _USING.reset(token)


def active(dtype="float32"):
    """Whether the kernel being traced should call the host loop, for data of `dtype`."""
    return _USING.get() and str(dtype) == "float32"


def _kernels():
    """The compiled loops, registered with XLA as FFI targets on first use."""
    global _KERNELS
    if _KERNELS is None:
        import ctypes

        import jax

        from gated_sae_layers.sparse import _ffi_handlers, _numba_loops

        new_capsule = ctypes.pythonapi.PyCapsule_New
        new_capsule.restype = ctypes.py_object
        new_capsule.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
        for name, handler in _ffi_handlers.HANDLERS.items():
            capsule = new_capsule(handler.address, b"xla._CUSTOM_CALL_TARGET", None)
            jax.ffi.register_ffi_target(name, capsule, platform="cpu", api_version=1)
        _KERNELS = _numba_loops
    return _KERNELS


def _call(name, result_shape, result_dtype, *args):
    """The loop `name` on `args`; a list of shapes and dtypes gives a list of results."""
    import jax

    _kernels()
    if isinstance(result_dtype, str):
        results = jax.ShapeDtypeStruct(result_shape, result_dtype)
    else:
        results = [jax.ShapeDtypeStruct(shape, dtype)
                   for shape, dtype in zip(result_shape, result_dtype)]
    return jax.ffi.ffi_call(f"gated_sae_layers_{name}", results,
                            vmap_method="sequential")(*args)


def _int32(indices):
    import jax.numpy as jnp

    return jnp.asarray(indices, jnp.int32)


def _row_ends(indices, ends):
    """`(rows,)` int32: the slots each row's loop visits."""
    import jax.numpy as jnp

    rows, slots = indices.shape
    if ends is None:
        return jnp.full((rows,), slots, jnp.int32)
    ends = jnp.minimum(jnp.asarray(ends, jnp.int32), slots)
    if ends.ndim == 0:
        return jnp.full((rows,), ends, jnp.int32)
    size = -(-rows // ends.shape[0])
    return jnp.repeat(ends, size)[:rows]


def _bias(bias):
    import jax.numpy as jnp

    return jnp.zeros((0,), jnp.float32) if bias is None else jnp.asarray(bias, jnp.float32)


def top_k_indices(scores, k, bias=None):
    """`(rows, k)` int32, the `k` largest of each row of `scores + bias` (the set
    `ops.top_k` picks), without the sum as a `(rows, width)` tensor."""
    return _call("top_k", (scores.shape[0], k), "int32", scores, _bias(bias))


def support_indices(scores, cap, bias=None):
    """`(indices, counts)`: `support.support_indices`'s slots and support sizes of
    `scores + bias > 0`, in one pass over each row, without the sum as a tensor."""
    rows = scores.shape[0]
    indices, counts = _call("support", [(rows, cap), (rows,)], ["int32", "int32"],
                            scores, _bias(bias))
    return indices, counts


def weighted_row_sum(table, indices, weights, ends=None):
    """`out[r] = sum_{s < end_r} weights[r, s] * table[indices[r, s]]`, float32."""
    return _call("weighted_row_sum", (indices.shape[0], table.shape[1]), "float32",
                 table, _int32(indices), weights, _row_ends(indices, ends))


def row_dots(table, indices, vectors, ends=None):
    """`out[r, s] = table[indices[r, s]] . vectors[r]` for `s < end_r`, else 0; float32."""
    return _call("row_dots", tuple(indices.shape), "float32",
                 table, _int32(indices), vectors, _row_ends(indices, ends))


def scatter_rows(indices, weights, vectors, num_rows, ends=None):
    """`out[j] = sum over (r, s < end_r), indices[r, s] == j of weights[r, s] * vectors[r]`."""
    return _call("scatter_rows", (num_rows, vectors.shape[1]), "float32",
                 _int32(indices), weights, vectors, _row_ends(indices, ends))


def scatter_columns(indices, weights, vectors, num_columns, ends=None):
    """`scatter_rows(...)` transposed, `(width, num_columns)`, without a transpose."""
    return _call("scatter_columns", (vectors.shape[1], num_columns), "float32",
                 _int32(indices), weights, vectors, _row_ends(indices, ends))
