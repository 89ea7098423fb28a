"""Safetensors files read without `safetensors` or torch, header first.

A safetensors file is an 8-byte little-endian header length, a JSON header
(`{name: {"dtype", "shape", "data_offsets"}}`, and `__metadata__`), then the
tensors' raw little-endian bytes, back to back. The header is read and
checked first: its length bounded (`MAX_HEADER_BYTES`), the tensors' byte
ranges filling the rest of the file exactly, and, where the caller knows
them, their names and shapes. Only then is each tensor read on its own, so a
truncated, padded, sparse or tampered file is refused by its header and size
before its data is read, and no file is ever read whole. `bfloat16` tensors
read through `ml_dtypes`, which Keras installs.
"""

import math
import os
import struct

import numpy as np

from gated_sae_layers.interop import _checks

MAX_HEADER_BYTES = 100 << 20

_SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32",
                       "F64": "float64"}


def _read_header(path, handle, size):
    """The JSON header of the open safetensors file `handle` (`size` bytes),
    with the byte where its data begins. Reads the header only."""
    if size < 8:
        raise ValueError(f"{path}: truncated safetensors file ({size} bytes, no "
                         "header length).")
    (length,) = struct.unpack("<Q", handle.read(8))
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise ValueError(f"{path}: truncated or corrupt safetensors file (header of "
                         f"{length} bytes, file of {size} bytes).")
    try:
        header = _checks.parse_json(handle.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: corrupt safetensors header ({error}).") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object).")
    header.pop("__metadata__", None)
    return header, 8 + length


def _tensor_entries(path, header, body):
    """`{name: (numpy dtype, shape, begin, end)}` of a parsed header, checked
    against `body`, the bytes after the header: the tensors must fill it
    exactly, without overlaps or gaps."""
    entries, ranges = {}, []
    for key, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{path}: corrupt header entry for tensor {key!r}.")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(
                f"{path}: tensor {key!r} has dtype {dtype}; expected a floating "
                f"dtype, one of {sorted(_SAFETENSORS_DTYPES)}.")
        if (not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2 or not all(
                    isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise ValueError(f"{path}: corrupt shape or offsets for tensor {key!r}.")
        numpy_type = _checks.numpy_dtype(_SAFETENSORS_DTYPES[dtype])
        begin, end = offsets
        if not 0 <= begin <= end <= body:
            raise ValueError(f"{path}: tensor {key!r} runs past the end of the file "
                             "(truncated file?).")
        if end - begin != math.prod(shape) * numpy_type.itemsize:
            raise ValueError(f"{path}: tensor {key!r} has {end - begin} bytes for shape "
                             f"{tuple(shape)} of {dtype}.")
        ranges.append((begin, end))
        entries[key] = (numpy_type, tuple(shape), begin, end)
    position = 0
    for begin, end in sorted(ranges):
        if begin != position:
            raise ValueError(f"{path}: tensor byte ranges overlap or leave gaps.")
        position = end
    if position != body:
        raise ValueError(f"{path}: {body - position} bytes after the last tensor; a "
                         "safetensors file ends with its last tensor (padded or "
                         "corrupt file?).")
    return entries


def safetensors_shapes(folder, name):
    """`{tensor name: shape}` of the safetensors file `folder / name`, from its
    header alone (checked as `read_safetensors` checks it); no tensor is read."""
    path = _checks.file_in(folder, name)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        header, start = _read_header(path, handle, size)
        entries = _tensor_entries(path, header, size - start)
    return {key: entry[1] for key, entry in entries.items()}


def read_safetensors(folder, name, expected=None):
    """Every tensor of the safetensors file `folder / name`, as numpy arrays.

    The header is read and checked first, and the tensors only then, each
    on its own, so a file is never read whole: a padded, sparse or huge file
    is refused by its header and size alone. Raises `ValueError` naming the
    file on a truncated or tampered file: a header that does not parse or
    is longer than `MAX_HEADER_BYTES`, a dtype other than float16/bfloat16/
    float32/float64, a shape whose size disagrees with its byte range, byte
    ranges that overlap, leave gaps or run past the end of the file, or a
    file longer than its last tensor.

    Args:
        folder: the folder.
        name: the file's name in it.
        expected: optional `{name: shape}`, the tensors the file must hold
            exactly; checked against the header, before any tensor is read.
    """
    path = _checks.file_in(folder, name)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        header, start = _read_header(path, handle, size)
        entries = _tensor_entries(path, header, size - start)
        if expected is not None:
            _checks.check_names_and_shapes(
                {key: entry[1] for key, entry in entries.items()}, expected, path)
        tensors = {}
        for key, (numpy_type, shape, begin, end) in entries.items():
            tensor = np.empty(shape, dtype=numpy_type.newbyteorder("<"))
            handle.seek(start + begin)
            if handle.readinto(memoryview(tensor.reshape(-1).view("uint8"))) != end - begin:
                raise ValueError(f"{path}: tensor {key!r} runs past the end of the file "
                                 "(the file shrank while it was read).")
            tensors[key] = tensor
    return tensors
