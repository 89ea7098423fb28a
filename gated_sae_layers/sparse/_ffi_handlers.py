"""The Numba loops of `_numba_loops` as typed XLA FFI handlers.

Each loop is reached from XLA as a typed FFI handler (`jax.ffi.ffi_call`):
a C function `XLA_FFI_Error* handler(XLA_FFI_CallFrame*)` that reads its
buffers from the call frame, without Python or the GIL. The offsets below
are those of the structs of XLA's FFI C API (`xla/ffi/api/c_api.h`, shipped
in `jax.ffi.include_dir()`), on a 64-bit platform.
"""

import numba
import numpy as np
from numba import carray, types
from numba.core import cgutils
from numba.extending import intrinsic

from gated_sae_layers.sparse._numba_loops import (row_dots, scatter_columns, scatter_rows,
                                                  support_rows, top_k_rows,
                                                  weighted_row_sum)

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
def support_handler(call_frame):
    done, args, rets = _frame(_pointer_value(call_frame))
    if not done:     # scores, bias -> indices, counts
        support_rows(_floats(args, 0), _vector(args, 1, np.float32), _ints(rets, 0),
                     _vector(rets, 1, np.int32))
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
    "gated_sae_layers_support": support_handler,
    "gated_sae_layers_weighted_row_sum": weighted_row_sum_handler,
    "gated_sae_layers_row_dots": row_dots_handler,
    "gated_sae_layers_scatter_rows": scatter_rows_handler,
    "gated_sae_layers_scatter_columns": scatter_columns_handler,
}
