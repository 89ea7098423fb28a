"""The files of an activation store, handled so that nothing in the folder is
trusted: the format's constants and errors, opening regular files without
following symbolic links, reading and validating the manifest (the column
blocks its metadata may record included), checking a shard's `.npy` header
and size, the writer's lock (`fcntl.flock`), atomic writes through
per-process temporary files, and sha256.

`ActivationStore` (in `store.py`) is built on these; this module knows
nothing of it.
"""

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat

import numpy as np

FORMAT = "gated_sae_layers.activation_store"
VERSION = 1
MANIFEST = "manifest.json"
LOCK = "writer.lock"
DTYPES = ("float16", "float32")
# The metadata key of a store's column blocks (`harvest` of several layers):
# a list of `{"name": str, "width": int}`, in column order.
BLOCKS_KEY = "blocks"
# The name of the one block of a store without recorded blocks or a `layer`.
DEFAULT_BLOCK_NAME = "activations"
_MAX_MANIFEST_BYTES = 1 << 28
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_TEMPORARY = re.compile(r"(shard_\d{5}\.npy|manifest\.json)\.\d+\.[0-9a-f]{8}\.tmp\Z")


class StoreCorruptionError(ValueError):
    """A store's manifest or a shard does not match what was written."""


class StoreLockedError(RuntimeError):
    """Another writer holds the store's lock."""


def shard_name(index):
    """The only file name shard `index` may have: `shard_{index:05d}.npy`."""
    return f"shard_{index:05d}.npy"


def _is_int(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _open_regular(path, label):
    """`(file, stat)` for reading `path`, a regular file: never a symbolic
    link, device or FIFO (which could lead outside the store or block)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise FileNotFoundError(f"{label} is missing.") from None
        if error.errno == errno.ELOOP:
            raise StoreCorruptionError(f"{label} is a symbolic link, not a file.") from None
        raise StoreCorruptionError(f"{label} cannot be opened: {error.strerror}.") from None
    handle = os.fdopen(descriptor, "rb")
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        handle.close()
        raise StoreCorruptionError(f"{label} is not a regular file.")
    return handle, status


def _sha256(handle):
    handle.seek(0)
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def _write_atomically(path, write):
    """Writes through a temporary file of this process, renamed to `path`.
    Returns `(bytes, sha256)` of what was written."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "x+b") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            size, digest = handle.tell(), _sha256(handle)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return size, digest


def _lock(folder):
    """The descriptor of `folder/writer.lock`, exclusively locked."""
    descriptor = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise StoreLockedError(
            f"Another process (or another writer in this one) is writing the store at "
            f"{folder}: it holds {folder / LOCK}. Wait for it to finish or stop it; a "
            "stopped or killed writer releases the lock.") from None
    except BaseException:
        os.close(descriptor)
        raise
    for leftover in folder.iterdir():  # of writers that died: none is alive now
        if _TEMPORARY.match(leftover.name):
            leftover.unlink(missing_ok=True)
    return descriptor


def _read_manifest(path):
    try:
        handle, status = _open_regular(path / MANIFEST, f"The manifest of {path}")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No activation store at {path}: {MANIFEST} is missing.") from None
    with handle:
        if status.st_size > _MAX_MANIFEST_BYTES:
            raise StoreCorruptionError(
                f"The manifest of {path} has {status.st_size} bytes, more than any "
                "store's manifest.")
        text = handle.read()
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise StoreCorruptionError(
            f"The manifest of {path} is not valid JSON: {error}") from None


def _manifest_problem(manifest):
    """What is wrong with the structure of `manifest`, or None."""
    for key, minimum in (("input_dim", 1), ("shard_rows", 1), ("num_rows", 0)):
        if not _is_int(manifest.get(key), minimum):
            return f"`{key}` must be an integer >= {minimum}, not {manifest.get(key)!r:.60}"
    if manifest.get("dtype") not in DTYPES:
        return f"`dtype` must be one of {DTYPES}, not {manifest.get('dtype')!r:.60}"
    for key, kind in (("metadata", dict), ("progress", dict), ("complete", bool),
                      ("shards", list)):
        if not isinstance(manifest.get(key), kind):
            return f"`{key}` must be a {kind.__name__}"
    if not all(_is_int(v, 0) for v in manifest["progress"].values()):
        return "`progress` must hold integers >= 0"
    problem = blocks_problem(manifest["metadata"], manifest["input_dim"])
    if problem:
        return problem
    for index, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict):
            return f"shard {index} must be a dict with `file`, `rows` and `sha256`"
        if shard.get("file") != shard_name(index):
            return (f"shard {index} must be the file {shard_name(index)!r}, "
                    f"not {shard.get('file')!r:.60}")
        if not _is_int(shard.get("rows"), 1) or shard["rows"] > manifest["shard_rows"]:
            return f"shard {index} must have 1 to `shard_rows` rows, not {shard.get('rows')!r:.60}"
        if not isinstance(shard.get("sha256"), str) or not _SHA256.match(shard["sha256"]):
            return f"shard {index} must have a hex `sha256`"
        if "bytes" in shard and not _is_int(shard["bytes"], 0):
            return f"shard {index} must have an integer `bytes`"
    return None


def blocks_problem(metadata, input_dim):
    """What is wrong with `metadata["blocks"]` (see `BLOCKS_KEY`) for rows of
    width `input_dim`, or None (also where there are no blocks)."""
    if BLOCKS_KEY not in metadata:
        return None
    blocks = metadata[BLOCKS_KEY]
    if not isinstance(blocks, list) or not blocks:
        return (f"`metadata['{BLOCKS_KEY}']` must be a non-empty list of "
                f"{{'name': str, 'width': int}}, not {blocks!r:.80}")
    for index, block in enumerate(blocks):
        if (not isinstance(block, dict) or set(block) != {"name", "width"}
                or not isinstance(block["name"], str) or not block["name"]
                or not _is_int(block["width"], 1)):
            return (f"block {index} of `metadata['{BLOCKS_KEY}']` must be "
                    f"{{'name': a non-empty str, 'width': an integer >= 1}}, "
                    f"not {block!r:.80}")
    names = [block["name"] for block in blocks]
    if len(set(names)) != len(names):
        return f"the names of `metadata['{BLOCKS_KEY}']` must differ, not {names!r:.200}"
    widths = [block["width"] for block in blocks]
    if sum(widths) != input_dim:
        return (f"the widths of `metadata['{BLOCKS_KEY}']` must sum to the store's "
                f"input_dim={input_dim}, not {sum(widths)} (widths {widths!r:.200})")
    return None


def block_ranges(metadata, input_dim, manifest_path):
    """`((name, start, stop), ...)`: the column blocks `metadata` records
    (validated: a bad record raises `StoreCorruptionError` naming
    `manifest_path`), or one block of the whole width, named after
    `metadata["layer"]` where that is a string."""
    if BLOCKS_KEY not in metadata:
        name = metadata.get("layer")
        return ((name if isinstance(name, str) and name else DEFAULT_BLOCK_NAME,
                 0, input_dim),)
    problem = blocks_problem(metadata, input_dim)
    if problem:
        raise StoreCorruptionError(
            f"{manifest_path} is not a valid store manifest: {problem}.")
    ranges, start = [], 0
    for block in metadata[BLOCKS_KEY]:
        ranges.append((block["name"], start, start + block["width"]))
        start += block["width"]
    return tuple(ranges)


def _check_manifest(manifest, path):
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or manifest.get("version") != VERSION):
        raise StoreCorruptionError(
            f"{path / MANIFEST} is not a version-{VERSION} activation store manifest.")
    problem = _manifest_problem(manifest)
    if problem:
        raise StoreCorruptionError(f"{path / MANIFEST} is not a valid store manifest: "
                                   f"{problem}.")
    if sum(s["rows"] for s in manifest["shards"]) != manifest["num_rows"]:
        raise StoreCorruptionError(f"The row counts in {path / MANIFEST} disagree.")


def _read_header(handle):
    """`(shape, fortran_order, dtype, data offset)` of a `.npy` file."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        header = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        header = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return (*header, handle.tell())


def _open_shard(folder, index, shard, input_dim, dtype):
    """`(file, stat, data offset)` of shard `index` (its manifest entry
    `shard`), checked to be the regular file `shard_{index:05d}.npy` in
    `folder` with shape `(shard["rows"], input_dim)`, `dtype` and the size
    its header and the manifest imply."""
    label = f"Shard {shard['file']} of {folder}"
    try:
        handle, status = _open_regular(folder / shard_name(index), label)
    except FileNotFoundError as error:
        raise StoreCorruptionError(str(error)) from None
    try:
        try:
            shape, fortran_order, found_dtype, offset = _read_header(handle)
        except ValueError as error:
            raise StoreCorruptionError(f"{label} cannot be read: {error}") from None
        expected = (shard["rows"], input_dim)
        if shape != expected or found_dtype != np.dtype(dtype) or fortran_order:
            raise StoreCorruptionError(
                f"{label} has shape {shape} and dtype {found_dtype}; the manifest says "
                f"{expected} {dtype}.")
        size = offset + shard["rows"] * input_dim * found_dtype.itemsize
        if status.st_size != size or shard.get("bytes", size) != size:
            raise StoreCorruptionError(
                f"{label} has {status.st_size} bytes; the manifest implies "
                f"{shard.get('bytes', size)}. Re-harvest it.")
    except BaseException:
        handle.close()
        raise
    return handle, status, offset
