"""Strict readers for SAE folders: `cfg.json` and `.safetensors` files, no pickle.

Every reader checks before it returns, and names the file and the problem in
a `ValueError`. The safetensors files are parsed here (an 8-byte header
length, a JSON header, then the raw little-endian data), so a truncated or
tampered file is caught by its header, and `bfloat16` tensors read without
torch (through `ml_dtypes`, which Keras installs). Only fixed file names
inside the given folder are opened.
"""

import json
import math
import numbers
import pathlib
import struct

import numpy as np

MAX_CFG_BYTES = 1 << 20
MAX_HEADER_BYTES = 100 << 20

_SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32",
                       "F64": "float64"}
EXPORT_DTYPES = ("float32", "float16", "bfloat16", "float64")


def numpy_dtype(name):
    """The numpy dtype of `name` (`"bfloat16"` through `ml_dtypes`)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def import_safetensors_numpy():
    """`safetensors.numpy`, or an `ImportError` that says how to install it."""
    try:
        import safetensors.numpy
    except ImportError as error:
        raise ImportError(
            "Writing SAE folders needs the `safetensors` package. Install it with "
            "`pip install gated-sae-layers[transformers]` (or `pip install "
            "safetensors`).") from error
    return safetensors.numpy


def check_folder(folder):
    """`folder` as a `pathlib.Path`; raises unless it is an existing folder."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"`folder` must be an existing folder. Received: folder={str(folder)!r}")
    return folder


def _file(folder, name):
    path = folder / name
    if path.is_symlink():
        raise ValueError(f"{path}: a symbolic link; only the folder's own {name} is read.")
    if not path.is_file():
        raise ValueError(f"{path}: the file is missing; expected {name} in {folder}.")
    return path


def _reject_constant(text):
    raise ValueError(f"non-standard JSON number {text}")


def read_json_object(folder, name):
    """The JSON object in `folder / name`; raises `ValueError` naming the file."""
    path = _file(folder, name)
    size = path.stat().st_size
    if size > MAX_CFG_BYTES:
        raise ValueError(f"{path}: {size} bytes, more than a config file holds "
                         f"(at most {MAX_CFG_BYTES}).")
    try:
        cfg = json.loads(path.read_bytes().decode("utf-8"),
                         parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object. Received: a JSON "
                         f"{type(cfg).__name__}.")
    return cfg


def cfg_int(cfg, key, path, minimum=1, default=None):
    """`cfg[key]` as an int >= `minimum` (`default` when absent and not None)."""
    if key not in cfg and default is not None:
        return default
    value = cfg.get(key)
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < minimum):
        raise ValueError(f"{path}: `{key}` must be an integer >= {minimum}. "
                         f"Received: {key}={value!r}")
    return int(value)


def cfg_bool(cfg, key, path, default):
    """`cfg[key]` as a bool (`default` when absent)."""
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{path}: `{key}` must be true or false. Received: "
                         f"{key}={value!r}")
    return value


def cfg_choice(cfg, key, path, choices, default=None):
    """`cfg[key]`, one of `choices` (`default` when absent and not None)."""
    value = cfg.get(key, default)
    if value not in choices:
        raise ValueError(f"{path}: `{key}` must be one of {list(choices)}. "
                         f"Received: {key}={value!r}")
    return value


def _parse_header(path, data):
    if len(data) < 8:
        raise ValueError(f"{path}: truncated safetensors file ({len(data)} bytes, no "
                         "header length).")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_BYTES, len(data) - 8):
        raise ValueError(f"{path}: truncated or corrupt safetensors file (header of "
                         f"{length} bytes, file of {len(data)} bytes).")
    try:
        header = json.loads(data[8:8 + length].decode("utf-8"),
                            parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: corrupt safetensors header ({error}).") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object).")
    header.pop("__metadata__", None)
    return header, 8 + length


def read_safetensors(folder, name):
    """Every tensor of the safetensors file `folder / name`, as numpy arrays.

    Raises `ValueError` naming the file on a truncated or tampered file: a
    header that does not parse, a dtype other than float16/bfloat16/float32/
    float64, a shape whose size disagrees with its byte range, byte ranges
    that overlap, leave gaps or run past the end of the file.
    """
    path = _file(folder, name)
    data = path.read_bytes()
    header, start = _parse_header(path, data)
    body = len(data) - start
    tensors, ranges = {}, []
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
        numpy_type = numpy_dtype(_SAFETENSORS_DTYPES[dtype])
        begin, end = offsets
        if not 0 <= begin <= end <= body:
            raise ValueError(f"{path}: tensor {key!r} runs past the end of the file "
                             "(truncated file?).")
        if end - begin != math.prod(shape) * numpy_type.itemsize:
            raise ValueError(f"{path}: tensor {key!r} has {end - begin} bytes for shape "
                             f"{tuple(shape)} of {dtype}.")
        ranges.append((begin, end))
        tensors[key] = np.frombuffer(
            data, dtype=numpy_type.newbyteorder("<"), count=math.prod(shape),
            offset=start + begin).reshape(shape)
    position = 0
    for begin, end in sorted(ranges):
        if begin != position:
            raise ValueError(f"{path}: tensor byte ranges overlap or leave gaps.")
        position = end
    if position != body:
        raise ValueError(f"{path}: {body - position} bytes after the last tensor.")
    return tensors


def check_tensors(tensors, expected, path):
    """Checks names, shapes and values; returns float64 copies.

    Args:
        tensors: dict of numpy arrays, from `read_safetensors`.
        expected: dict `{name: shape}`, every tensor the file must hold.
        path: the file, named in errors.

    Returns:
        `{name: float64 array}`; raises `ValueError` on a missing or
        unexpected tensor, a wrong shape, or a NaN or infinite value.
    """
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"{path}: missing tensor(s) {missing}; expected "
                         f"{sorted(expected)}.")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ValueError(f"{path}: unexpected tensor(s) {extra}; expected exactly "
                         f"{sorted(expected)}.")
    checked = {}
    for name, shape in expected.items():
        value = tensors[name]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {tuple(value.shape)}; "
                             f"expected {tuple(shape)} (from the config).")
        value = value.astype("float64")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{path}: tensor {name!r} holds NaN or infinite values.")
        checked[name] = value
    return checked


def write_folder(folder, files, stale=()):
    """Writes `files` (`{name: bytes}`) into `folder`, then deletes the files
    named in `stale` (of the SAE being replaced) that `files` does not hold.

    Every file is first written whole under a temporary name, and only then
    renamed into place (`os.replace`), so a failed write (a full disk)
    leaves the folder as it was. Other files in the folder are left alone.
    """
    import os
    import secrets

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = f".{os.getpid()}.{secrets.token_hex(4)}.partial"
    written = []
    try:
        for name, content in files.items():
            temporary = folder / f".{name}{suffix}"
            written.append(temporary)
            temporary.write_bytes(content)
    except BaseException:
        for temporary in written:
            temporary.unlink(missing_ok=True)
        raise
    for name in files:
        os.replace(folder / f".{name}{suffix}", folder / name)
    for name in stale:
        if name not in files:
            (folder / name).unlink(missing_ok=True)


def check_folder_for_writing(folder, names, overwrite):
    """`folder` as a `pathlib.Path`; raises if it names an existing file, or,
    unless `overwrite`, if it already holds any of the files `names`."""
    folder = pathlib.Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(
            f"`folder` must be a folder (created if missing), not a file. Received: "
            f"folder={str(folder)!r}")
    existing = [name for name in names if (folder / name).exists()
                or (folder / name).is_symlink()]
    if existing and not overwrite:
        raise FileExistsError(
            f"`folder` already holds an SAE ({', '.join(existing)}). Pass "
            "`overwrite=True` to replace it (other files in the folder are left "
            f"alone), or choose another folder. Received: folder={str(folder)!r}")
    return folder
