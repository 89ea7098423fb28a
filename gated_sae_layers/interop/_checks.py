"""SAE folders: strict `cfg.json` readers, tensor checks, the all-or-nothing writer.

Every reader checks before it returns, and names the file and the problem in
a `ValueError` (JSON nested too deeply to parse too); the safetensors files
are read in `_safetensors`. Only fixed file names inside the given folder
are opened. `write_folder` replaces an SAE's files all or nothing.
"""

import json
import numbers
import os
import pathlib
import secrets
import shutil

import numpy as np

MAX_CFG_BYTES = 1 << 20
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


def file_in(folder, name):
    """`folder / name`, a regular file and not a symbolic link, or a `ValueError`."""
    path = folder / name
    if path.is_symlink():
        raise ValueError(f"{path}: a symbolic link; only the folder's own {name} is read.")
    if not path.is_file():
        raise ValueError(f"{path}: the file is missing; expected {name} in {folder}.")
    return path


def _reject_constant(text):
    raise ValueError(f"non-standard JSON number {text}")


def parse_json(text):
    """`json.loads` that refuses non-standard numbers, and nesting too deep for
    the parser (a `RecursionError` there) as a `ValueError`."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None


def read_json_object(folder, name):
    """The JSON object in `folder / name`; raises `ValueError` naming the file."""
    path = file_in(folder, name)
    with open(path, "rb") as handle:   # never more than MAX_CFG_BYTES + 1 read
        data = handle.read(MAX_CFG_BYTES + 1)
    if len(data) > MAX_CFG_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, more than a config "
                         f"file holds (at most {MAX_CFG_BYTES}).")
    try:
        cfg = parse_json(data.decode("utf-8"))
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


def check_names_and_shapes(shapes, expected, path):
    """Raises unless `shapes` (`{name: shape}`) are exactly `expected`'s."""
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise ValueError(f"{path}: missing tensor(s) {missing}; expected "
                         f"{sorted(expected)}.")
    extra = sorted(set(shapes) - set(expected))
    if extra:
        raise ValueError(f"{path}: unexpected tensor(s) {extra}; expected exactly "
                         f"{sorted(expected)}.")
    for name, shape in expected.items():
        if tuple(shapes[name]) != tuple(shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {tuple(shapes[name])}; "
                             f"expected {tuple(shape)} (from the config).")


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
    check_names_and_shapes({key: value.shape for key, value in tensors.items()},
                           expected, path)
    checked = {}
    for name in expected:
        value = tensors[name].astype("float64")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{path}: tensor {name!r} holds NaN or infinite values.")
        checked[name] = value
    return checked


def _write_new_file(path, content):
    """Writes `content` to the new file `path` and flushes it to the disk."""
    with open(path, "xb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def write_folder(folder, files, stale=()):
    """Writes `files` (`{name: bytes}`) into `folder`, all or nothing, and
    removes the files named in `stale` (of the SAE being replaced) that
    `files` does not hold.

    Every file is first written whole into a hidden temporary folder: beside
    `folder` when it does not exist yet (then renamed into place, whole), else
    inside it (so on the same file system as the files it replaces). Only when
    all are written are the old files (`files` and `stale`) moved out, into
    that temporary folder, and the new ones moved in, the last of `files`
    (`cfg.json`) first out and last in: a reader sees the old SAE, no SAE
    (no config), or the new one, never new weights beside an old config or
    sparsity file. A failure at any step (a full disk, a failed rename,
    Ctrl-C) moves everything back: the folder is left as it was and the
    temporary folder is deleted. Other files in the folder are left alone.
    (A process killed while moving leaves the old files in the hidden
    `.sae.*.partial/replaced/` inside the folder.)
    """
    folder = pathlib.Path(folder)
    tag = f"{os.getpid()}.{secrets.token_hex(4)}.partial"
    if not (folder.exists() or folder.is_symlink()):
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.with_name(f".{folder.name}.{tag}")
        staging.mkdir()
        try:
            for name, content in files.items():
                _write_new_file(staging / name, content)
            os.rename(staging, folder)   # fails if `folder` appeared, not empty
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return
    staging = folder / f".sae.{tag}"
    staging.mkdir()
    try:
        for name, content in files.items():
            _write_new_file(staging / name, content)
        backup = staging / "replaced"
        backup.mkdir()
        leaving = [name for name in list(files)[::-1] + [n for n in stale if n not in files]
                   if (folder / name).exists() or (folder / name).is_symlink()]
        moved_out, moved_in = [], []
        try:
            for name in leaving:
                os.rename(folder / name, backup / name)
                moved_out.append(name)
            for name in files:
                os.rename(staging / name, folder / name)
                moved_in.append(name)
        except BaseException:
            for name in reversed(moved_in):
                os.rename(folder / name, staging / name)
            for name in reversed(moved_out):
                os.rename(backup / name, folder / name)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_folder_for_writing(folder, names, overwrite):
    """`folder` as a `pathlib.Path`; raises if it names an existing file, or,
    unless `overwrite`, if it already holds any of the files `names`; or if
    one of `names` there is a folder (never replaced)."""
    folder = pathlib.Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(
            f"`folder` must be a folder (created if missing), not a file. Received: "
            f"folder={str(folder)!r}")
    existing = [name for name in names if (folder / name).exists()
                or (folder / name).is_symlink()]
    for name in existing:
        if (folder / name).is_dir() and not (folder / name).is_symlink():
            raise FileExistsError(
                f"`folder` holds a folder named {name}, not a file: it is never "
                f"replaced. Move it, or choose another folder. Received: "
                f"folder={str(folder)!r}")
    if existing and not overwrite:
        raise FileExistsError(
            f"`folder` already holds an SAE ({', '.join(existing)}). Pass "
            "`overwrite=True` to replace it (other files in the folder are left "
            f"alone), or choose another folder. Received: folder={str(folder)!r}")
    return folder
