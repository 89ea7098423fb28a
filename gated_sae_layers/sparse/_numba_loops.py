"""The Numba loops behind `host` (imported only when Numba is installed).

Every function takes C-contiguous NumPy arrays (float32 values, int32
indices) and splits its outer loop over the cores with `prange`.
"""

import numba
import numpy as np
from numba import carray, prange, types
from numba.core import cgutils
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

_REASSOCIATE = {"reassoc", "contract"}
"""`row_dots` may reorder its sums (so that they vectorize); nothing else may."""

_BLOCK = 32
_ROWS_PER_TASK = 8
_COLUMNS = 16


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
    for task in prange(tasks):
        maxima = np.empty(max(width // max(block, 1), 1), np.int32)
        keys = np.empty(width, np.int32)
        positions = np.empty(width, np.int32)
        scratch = np.empty(width, np.int32)
        shifted = np.empty(width, np.float32)
        for r in range(task * _ROWS_PER_TASK, min(rows, (task + 1) * _ROWS_PER_TASK)):
            if bias.shape[0]:
                for j in range(width):
                    shifted[j] = scores[r, j] + bias[j]
                bits = shifted.view(np.int32)
            else:
                bits = scores[r].view(np.int32)
            _top_k_row(bits, k, block, maxima, keys, positions, scratch, out[r])


@numba.njit(parallel=True, nogil=True, cache=True)
def weighted_row_sum(table, indices, weights, ends, out):
    """`out[r] = sum_{s < ends[r]} weights[r, s] * table[indices[r, s]]`, slots in order."""
    rows = indices.shape[0]
    width = table.shape[1]
    for r in prange(rows):
        total = out[r]
        total[:] = 0.0
        for s in range(ends[r]):
            weight = weights[r, s]
            source = table[indices[r, s]]
            for d in range(width):
                total[d] += weight * source[d]


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=_REASSOCIATE)
def row_dots(table, indices, vectors, ends, out):
    """`out[r, s] = table[indices[r, s]] . vectors[r]` for `s < ends[r]`, else 0."""
    rows, slots = indices.shape
    width = table.shape[1]
    for r in prange(rows):
        vector = vectors[r]
        out[r, :] = 0.0
        for s in range(ends[r]):
            source = table[indices[r, s]]
            total = np.float32(0.0)
            for d in range(width):
                total += source[d] * vector[d]
            out[r, s] = total


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

    Each sum runs in `(r, s)` order; the destination rows are split over the cores.
    """
    starts, entries = _by_destination(indices, ends, out.shape[0])
    slots = indices.shape[1]
    for j in prange(out.shape[0]):
        total = out[j]
        total[:] = 0.0
        _add_bucket(total, starts, entries, j, slots, weights, vectors)


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
    tasks = (num_columns + _COLUMNS - 1) // _COLUMNS
    for task in prange(tasks):
        first = task * _COLUMNS
        last = min(num_columns, first + _COLUMNS)
        totals = np.zeros((_COLUMNS, width), np.float32)
        for j in range(first, last):
            _add_bucket(totals[j - first], starts, entries, j, slots, weights, vectors)
        for d in range(width):
            for j in range(first, last):
                out[d, j] = totals[j - first, d]


# ------------------------------------------------------------- XLA FFI handlers
# Each loop is reached from XLA as a typed FFI handler (`jax.ffi.ffi_call`):
# a C function `XLA_FFI_Error* handler(XLA_FFI_CallFrame*)` that reads its
# buffers from the call frame, without Python or the GIL. The offsets below
# are those of the structs of XLA's FFI C API (`xla/ffi/api/c_api.h`, shipped
# in `jax.ffi.include_dir()`), on a 64-bit platform.

_API_MAJOR, _API_MINOR = 0, 3
_METADATA_EXTENSION = 1
_EXECUTE_STAGE = 3


@intrinsic
def _pointer(typingctx, address):
    """An int64 address as a `void*`."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


@intrinsic
def _pointer_value(typingctx, pointer):
    """A `void*` as an int64 address."""
    def codegen(context, builder, signature, args):
        return builder.ptrtoint(args[0], cgutils.intp_t)

    return types.int64(types.voidptr), codegen


@numba.njit(inline="always")
def _words(address, count):
    return carray(_pointer(address), (count,), np.int64)


@numba.njit(inline="always")
def _buffer(pointers, index):
    """`(data address, dims)` of buffer `index` of an `XLA_FFI_Args`/`Rets` array."""
    buffer = _words(pointers[index], 6)       # struct_size, ext, dtype, data, rank, dims
    return buffer[3], _words(buffer[5], buffer[4])


@numba.njit(inline="always")
def _frame(call_frame):
    """`(done, args, rets)`: `done` when the call is a metadata query or another
    stage (answered here), else the arrays of argument and result buffer addresses."""
    frame = _words(call_frame, 15)
    extension = frame[1]
    if extension != 0:
        base = _words(extension, 4)              # struct_size, type, next, metadata
        if (base[1] & 0xFFFFFFFF) == _METADATA_EXTENSION:
            metadata = _words(base[3], 6)
            # XLA_FFI_Metadata: struct_size, api_version {struct_size (28),
            # extension_start, major, minor}, traits, state_type_id (from
            # API 0.2 on: written only where the struct has it).
            metadata[1] = 28
            metadata[2] = 0
            metadata[3] = _API_MAJOR | (_API_MINOR << 32)
            metadata[4] = 0
            if metadata[0] >= 48:
                metadata[5] = 0
            return True, frame, frame
    if (frame[4] & 0xFFFFFFFF) != _EXECUTE_STAGE:
        return True, frame, frame
    return False, _words(frame[9], frame[7]), _words(frame[14], frame[12])


@numba.njit(inline="always")
def _floats(pointers, index):
    """Buffer `index` as a float32 matrix of its own dims."""
    data, dims = _buffer(pointers, index)
    return carray(_pointer(data), (dims[0], dims[1]), np.float32)


@numba.njit(inline="always")
def _ints(pointers, index):
    """Buffer `index` as an int32 matrix of its own dims."""
    data, dims = _buffer(pointers, index)
    return carray(_pointer(data), (dims[0], dims[1]), np.int32)


@numba.njit(inline="always")
def _vector(pointers, index, dtype):
    """Buffer `index` as a vector of `dtype`."""
    data, dims = _buffer(pointers, index)
    return carray(_pointer(data), (dims[0],), dtype)


_HANDLER = types.voidptr(types.voidptr)


@numba.cfunc(_HANDLER, nogil=True, cache=True)
def top_k_handler(call_frame):
    done, args, rets = _frame(_pointer_value(call_frame))
    if not done:     # scores, bias -> indices
        top_k_rows(_floats(args, 0), _vector(args, 1, np.float32), _ints(rets, 0))
    return _pointer(0)


@numba.cfunc(_HANDLER, nogil=True, cache=True)
def weighted_row_sum_handler(call_frame):
    done, args, rets = _frame(_pointer_value(call_frame))
    if not done:     # table, indices, weights, ends -> sums
        weighted_row_sum(_floats(args, 0), _ints(args, 1), _floats(args, 2),
                         _vector(args, 3, np.int32), _floats(rets, 0))
    return _pointer(0)


@numba.cfunc(_HANDLER, nogil=True, cache=True)
def row_dots_handler(call_frame):
    done, args, rets = _frame(_pointer_value(call_frame))
    if not done:     # table, indices, vectors, ends -> dots
        row_dots(_floats(args, 0), _ints(args, 1), _floats(args, 2),
                 _vector(args, 3, np.int32), _floats(rets, 0))
    return _pointer(0)


@numba.cfunc(_HANDLER, nogil=True, cache=True)
def scatter_rows_handler(call_frame):
    done, args, rets = _frame(_pointer_value(call_frame))
    if not done:     # indices, weights, vectors, ends -> (num_rows, width)
        scatter_rows(_ints(args, 0), _floats(args, 1), _floats(args, 2),
                     _vector(args, 3, np.int32), _floats(rets, 0))
    return _pointer(0)


@numba.cfunc(_HANDLER, nogil=True, cache=True)
def scatter_columns_handler(call_frame):
    done, args, rets = _frame(_pointer_value(call_frame))
    if not done:     # indices, weights, vectors, ends -> (width, num_columns)
        scatter_columns(_ints(args, 0), _floats(args, 1), _floats(args, 2),
                        _vector(args, 3, np.int32), _floats(rets, 0))
    return _pointer(0)


HANDLERS = {
    "gated_sae_layers_top_k": top_k_handler,
    "gated_sae_layers_weighted_row_sum": weighted_row_sum_handler,
    "gated_sae_layers_row_dots": row_dots_handler,
    "gated_sae_layers_scatter_rows": scatter_rows_handler,
    "gated_sae_layers_scatter_columns": scatter_columns_handler,
}
