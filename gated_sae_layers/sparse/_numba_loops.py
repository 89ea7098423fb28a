"""The Numba loops behind `host` (imported only when Numba is installed).

Every function takes C-contiguous NumPy arrays (float32 values, int32
indices) and splits its work over the cores: `_WORKERS` `prange`
iterations (OpenMP deals each thread a share of them), each claiming small
tasks (a few rows, or destination rows) from a shared atomic counter until
none is left, so the thread that gets to a task first runs it. A thread that the host preempts
then delays the loop by one task, not by half the loop (OpenMP's static
split of a plain `prange`). Each output is written by the one task that
owns it, so the results do not depend on which thread ran what.
"""

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

if numba.config.THREADING_LAYER == "default":
    # XLA calls the loops from its own threads, possibly two at once:
    # only a thread-safe layer (TBB or OpenMP) may run them.
    numba.config.THREADING_LAYER = "threadsafe"


@numba.njit(parallel=True, cache=True)
def _start_threads(values):
    for i in prange(values.shape[0]):
        values[i] = i


# The handlers below, when loaded from Numba's cache, need the threading
# layer loaded first.
_start_threads(np.zeros(2, np.int64))
THREADING_LAYER = numba.threading_layer()
if THREADING_LAYER == "workqueue":
    raise ImportError(
        "Numba's threading layer is 'workqueue', which XLA's threads may not share "
        "(it was chosen before gated_sae_layers asked for a thread-safe one: set "
        "NUMBA_THREADING_LAYER=omp or tbb)")



@intrinsic
def _claim(typingctx, counter):
    """`counter[0] += 1` as one atomic step; gives the value before."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", array.data, context.get_constant(types.int64, 1),
                                  "monotonic")

    return types.int64(counter), codegen


_REASSOCIATE = {"reassoc", "contract"}
"""`row_dots` may reorder its sums (so that they vectorize); nothing else may."""

_WORKERS = 256
"""`prange` iterations of each loop, each claiming tasks until none is left: as
many as the most threads a host runs (an iteration that finds no task left
ends at once). A constant: reading the thread count would keep Numba from
caching the loops."""

_BLOCK = 32
_ROWS_PER_TASK = 8
_COLUMNS = 16
_BLOCKS_PER_TASK = 8
"""A task of `scatter_columns` writes 8 blocks of `_COLUMNS` columns: two threads
then write apart (a block's 64 bytes per row may share a cache line with the next)."""


@numba.njit(nogil=True, cache=True, inline="always")
def _task_rows(task, rows):
    """The rows of task `task`: `_ROWS_PER_TASK` consecutive ones."""
    return range(task * _ROWS_PER_TASK, min(rows, (task + 1) * _ROWS_PER_TASK))


@numba.njit(nogil=True, cache=True)
def _select(values, count, position):
    """The value at `position` of `values[:count]` sorted ascending (reorders them).

    Hoare's quickselect; `values` are int32 keys (`_key`), so every pair compares."""
    low, high = 0, count - 1
    while low < high:
        pivot = values[(low + high) >> 1]
        i, j = low, high
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if position <= j:
            high = j
        elif position >= i:
            low = i
        else:
            return values[position]
    return values[position]


@numba.njit(nogil=True, cache=True, inline="always")
def _key(bits):
    """A float32's bits as an int32 in the float's total order (XLA's `top_k` order:
    -NaN < -inf < ... < -0 < +0 < ... < +inf < NaN)."""
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@numba.njit(nogil=True, cache=True)
def _top_k_row(row, k, block, maxima, keys, positions, scratch, out):
    """`out` = the positions of the `k` largest keys of `row` (int32 float bits),
    ties to the lower position, in increasing position order."""
    width = row.shape[0]
    blocks = width // block if block > 0 else 0
    for b in range(blocks):
        largest = _key(row[b * block])
        for q in range(b * block + 1, b * block + block):
            largest = max(largest, _key(row[q]))
        maxima[b] = largest
    # Every entry of the top k is >= the k-th largest block maximum: the
    # candidates (with their positions, in order) are the entries >= it,
    # all in the blocks whose maximum reaches it (and the partial last block).
    floor = np.int32(-2**31)
    if blocks >= k:
        scratch[:blocks] = maxima[:blocks]
        floor = _select(scratch, blocks, blocks - k)
    count = 0
    for b in range(blocks):
        if maxima[b] >= floor:
            for j in range(b * block, b * block + block):
                key = _key(row[j])
                if key >= floor:
                    keys[count] = key
                    positions[count] = j
                    count += 1
    for j in range(blocks * block, width):
        key = _key(row[j])
        if key >= floor:
            keys[count] = key
            positions[count] = j
            count += 1
    scratch[:count] = keys[:count]
    kth = _select(scratch, count, count - k)
    n = 0
    for c in range(count):
        if keys[c] > kth:
            n += 1
    ties = k - n
    n = 0
    for c in range(count):
        if keys[c] > kth or (keys[c] == kth and ties > 0):
            if keys[c] == kth:
                ties -= 1
            out[n] = positions[c]
            n += 1


@numba.njit(parallel=True, nogil=True, cache=True)
def top_k_rows(scores, bias, out):
    """`out` `(rows, k)` int32: each row's `k` largest entries of `scores + bias`
    (`bias` `(width,)`, or `(0,)` for none), ties to the lower index."""
    rows, width = scores.shape
    k = out.shape[1]
    block = _BLOCK if width // _BLOCK >= k else width // k
    tasks = (rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    claimed = np.zeros(1, np.int64)
    for _ in prange(_WORKERS):
        task = _claim(claimed)
        if task < tasks:      # scratch only for iterations that have work
            maxima = np.empty(max(width // max(block, 1), 1), np.int32)
            keys = np.empty(width, np.int32)
            positions = np.empty(width, np.int32)
            scratch = np.empty(width, np.int32)
            shifted = np.empty(width, np.float32)
            while task < tasks:
                for r in _task_rows(task, rows):
                    if bias.shape[0]:
                        for j in range(width):
                            shifted[j] = scores[r, j] + bias[j]
                        bits = shifted.view(np.int32)
                    else:
                        bits = scores[r].view(np.int32)
                    _top_k_row(bits, k, block, maxima, keys, positions, scratch, out[r])
                task = _claim(claimed)


@numba.njit(parallel=True, nogil=True, cache=True)
def weighted_row_sum(table, indices, weights, ends, out):
    """`out[r] = sum_{s < ends[r]} weights[r, s] * table[indices[r, s]]`, slots in order."""
    rows = indices.shape[0]
    width = table.shape[1]
    tasks = (rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    claimed = np.zeros(1, np.int64)
    for _ in prange(_WORKERS):
        task = _claim(claimed)
        while task < tasks:
            for r in _task_rows(task, rows):
                total = out[r]
                total[:] = 0.0
                for s in range(ends[r]):
                    weight = weights[r, s]
                    source = table[indices[r, s]]
                    for d in range(width):
                        total[d] += weight * source[d]
            task = _claim(claimed)


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=_REASSOCIATE)
def row_dots(table, indices, vectors, ends, out):
    """`out[r, s] = table[indices[r, s]] . vectors[r]` for `s < ends[r]`, else 0."""
    rows, slots = indices.shape
    width = table.shape[1]
    tasks = (rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    claimed = np.zeros(1, np.int64)
    for _ in prange(_WORKERS):
        task = _claim(claimed)
        while task < tasks:
            for r in _task_rows(task, rows):
                vector = vectors[r]
                out[r, :] = 0.0
                for s in range(ends[r]):
                    source = table[indices[r, s]]
                    total = np.float32(0.0)
                    for d in range(width):
                        total += source[d] * vector[d]
                    out[r, s] = total
            task = _claim(claimed)


@numba.njit(nogil=True, cache=True)
def _by_destination(indices, ends, num_rows):
    """`(starts, entries)`: the entries `r * slots + s` (`s < ends[r]`) bucketed by
    `indices[r, s]`, in `(r, s)` order within a bucket; bucket `j` is
    `entries[starts[j]:starts[j + 1]]`."""
    rows, slots = indices.shape
    starts = np.zeros(num_rows + 1, np.int64)
    for r in range(rows):
        for s in range(ends[r]):
            starts[indices[r, s] + 1] += 1
    for j in range(num_rows):
        starts[j + 1] += starts[j]
    filled = starts[:-1].copy()
    entries = np.empty(starts[num_rows], np.int64)
    for r in range(rows):
        for s in range(ends[r]):
            j = indices[r, s]
            entries[filled[j]] = r * slots + s
            filled[j] += 1
    return starts, entries


@numba.njit(nogil=True, cache=True, inline="always")
def _add_bucket(total, starts, entries, j, slots, weights, vectors):
    for e in range(starts[j], starts[j + 1]):
        r = entries[e] // slots
        weight = weights[r, entries[e] % slots]
        source = vectors[r]
        for d in range(total.shape[0]):
            total[d] += weight * source[d]


@numba.njit(parallel=True, nogil=True, cache=True)
def scatter_rows(indices, weights, vectors, ends, out):
    """`out[j] = sum_{(r, s < ends[r]): indices[r, s] = j} weights[r, s] * vectors[r]`.

    Each sum runs in `(r, s)` order; tasks of `_COLUMNS` destination rows are
    shared out over the cores.
    """
    num_rows = out.shape[0]
    starts, entries = _by_destination(indices, ends, num_rows)
    slots = indices.shape[1]
    tasks = (num_rows + _COLUMNS - 1) // _COLUMNS
    claimed = np.zeros(1, np.int64)
    for _ in prange(_WORKERS):
        task = _claim(claimed)
        while task < tasks:
            for j in range(task * _COLUMNS, min(num_rows, (task + 1) * _COLUMNS)):
                total = out[j]
                total[:] = 0.0
                _add_bucket(total, starts, entries, j, slots, weights, vectors)
            task = _claim(claimed)


@numba.njit(parallel=True, nogil=True, cache=True)
def scatter_columns(indices, weights, vectors, ends, out):
    """`scatter_rows` written transposed: `out[:, j]` (`out` `(width, num_columns)`).

    The encoder's kernel gradient, in the kernel's own `(input_dim,
    latent_dim)` layout: each task sums `_COLUMNS` destinations into a
    small buffer and writes them as rows of `_COLUMNS` contiguous floats.
    """
    width, num_columns = out.shape
    starts, entries = _by_destination(indices, ends, num_columns)
    slots = indices.shape[1]
    per_task = _COLUMNS * _BLOCKS_PER_TASK
    tasks = (num_columns + per_task - 1) // per_task
    claimed = np.zeros(1, np.int64)
    for _ in prange(_WORKERS):
        task = _claim(claimed)
        if task < tasks:      # scratch only for iterations that have work
            totals = np.empty((_COLUMNS, width), np.float32)
            while task < tasks:
                for first in range(task * per_task, min(num_columns, (task + 1) * per_task),
                                   _COLUMNS):
                    last = min(num_columns, first + _COLUMNS)
                    totals[:] = 0.0
                    for j in range(first, last):
                        _add_bucket(totals[j - first], starts, entries, j, slots, weights,
                                    vectors)
                    for d in range(width):
                        for j in range(first, last):
                            out[d, j] = totals[j - first, d]
                task = _claim(claimed)


@numba.njit(parallel=True, nogil=True, cache=True)
def support_rows(scores, bias, out, counts):
    """Each row's support (`scores + bias > 0`; `bias` `(width,)` or `(0,)` for
    none): `counts[r]` its size, `out[r]` its first `cap` latents in increasing
    order, then (where it is smaller) latents outside it, in increasing order."""
    rows, width = scores.shape
    cap = out.shape[1]
    tasks = (rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    claimed = np.zeros(1, np.int64)
    for _ in prange(_WORKERS):
        task = _claim(claimed)
        if task < tasks:      # scratch only for iterations that have work
            found = np.empty(width + 1, np.int32)
            shifted = np.empty(width, np.float32)
            while task < tasks:
                for r in _task_rows(task, rows):
                    if bias.shape[0]:
                        for j in range(width):
                            shifted[j] = scores[r, j] + bias[j]
                        row = shifted
                    else:
                        row = scores[r]
                    n = 0
                    for j in range(width):       # branch-free: write always, keep where > 0
                        found[n] = j
                        n += row[j] > 0
                    counts[r] = n
                    used = min(n, cap)
                    out[r, :used] = found[:used]
                    j = 0
                    while used < cap and j < width:
                        if not row[j] > 0:
                            out[r, used] = j
                            used += 1
                        j += 1
                task = _claim(claimed)
