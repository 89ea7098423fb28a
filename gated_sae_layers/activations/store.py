"""A sharded on-disk store of activations that can exceed memory.

Layout of a store folder:

```
manifest.json          # format, input_dim, dtype, metadata, shards (file, rows,
                       # bytes, sha256), progress
shard_00000.npy        # (rows, input_dim) arrays, written whole then renamed
shard_00001.npy
...
writer.lock            # locked by the one writer (never a shard; kept on disk)
```

Writing: one writer at a time. `create` (fresh or `resume=True`) takes an
exclusive `fcntl.flock` on `writer.lock`, held until `close()`, `abandon()`
or the writer's garbage collection; the kernel drops it when the process
dies, even by `kill -9`. A second writer gets `StoreLockedError`. Every
shard is written to a temporary file named for the process (pid and a
random suffix), flushed and renamed into place, and only then listed in the
manifest (also replaced atomically): a crash loses at most the shard in
flight, never a listed one; the next writer deletes such leftovers. A
resume must match the store's `input_dim`, `dtype`, `shard_rows` and
`metadata`.

Reading (`open` takes no lock) trusts nothing in the folder: the manifest's
structure is validated; a shard must be exactly `shard_{index:05d}.npy`, a
regular file in the store's folder (no other name or path, no symbolic
link, device or FIFO), of the size its `.npy` header and the manifest
imply; it is read with `allow_pickle=False` as a read-only memory map, its
shape and dtype checked on every read. Its sha256 is verified on its first
read and again on any later read (every epoch) where the file's device,
inode, size, `mtime_ns` or `ctime_ns` changed since: a shard changed on
disk raises `StoreCorruptionError` naming it. (A change that keeps all
five, within the file system's timestamp granularity, shows on the next
`open`.)
"""

import errno
import fcntl
import hashlib
import json
import os
import pathlib
import re
import secrets
import stat

import numpy as np

from gated_sae_layers._validation import check_positive_int

FORMAT = "gated_sae_layers.activation_store"
VERSION = 1
MANIFEST = "manifest.json"
LOCK = "writer.lock"
DTYPES = ("float16", "float32")
# Written into `metadata` and checked by `harvest`, not by `create(resume=True)`.
FINGERPRINT_KEY = "inputs_fingerprint"
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


def _json_dict(value, name):
    """`value` as it reads back from JSON, or a TypeError."""
    if value is None:
        return {}
    try:
        if not isinstance(value, dict):
            raise TypeError
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a JSON-serializable dict. "
                        f"Received: {name}={value!r:.200}") from None


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


class ActivationStore:
    """Fixed-size shards of `(rows, input_dim)` activations with a manifest.

    Create with `ActivationStore.create(path, input_dim)`, add rows with
    `append` (full shards are written as they fill), and `close()` to write
    the last, partial shard. `ActivationStore.open(path)` reads one back.
    `create(..., resume=True)` on an existing, unfinished store continues
    after its last complete shard. A writer (from `create`) holds the
    store's lock until `close()` or `abandon()`; see the module docstring
    for what reading checks.

    Args (of `create`):
        path: the store's folder (created if needed).
        input_dim: int, the activation width.
        dtype: `"float16"` (half the disk; values must stay within +-65504)
            or `"float32"`.
        shard_rows: int, rows per shard (the last shard may be shorter).
        metadata: a JSON-serializable dict (model, layer, ...) kept in the
            manifest. A resume must pass the same metadata (the harvest's
            `inputs_fingerprint`, checked by `harvest`, aside).
        resume: continue an unfinished store at `path` instead of failing.

    Example:

    >>> import tempfile, numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> store = ActivationStore.create(folder, input_dim=4, shard_rows=3)
    >>> store.append(np.ones((7, 4), "float32"))
    >>> store.close()
    >>> reopened = ActivationStore.open(folder)
    >>> reopened.num_rows, reopened.num_shards, reopened.read_all().shape
    (7, 3, (7, 4))
    """

    def __init__(self, path, manifest):
        self.path = pathlib.Path(path)
        self.manifest = manifest
        self._buffer = []
        self._buffered_rows = 0
        self._verified = {}  # shard index -> file identity when last hashed
        self._lock = None    # the lock's descriptor, for a writer

    def __del__(self):
        self._release()

    # ----------------------------------------------------------- creation
    @classmethod
    def create(cls, path, input_dim, dtype="float16", shard_rows=65536,
               metadata=None, resume=False):
        path = pathlib.Path(path)
        input_dim = check_positive_int(input_dim, "input_dim")
        shard_rows = check_positive_int(shard_rows, "shard_rows")
        if dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {DTYPES}. Received: dtype={dtype!r}")
        metadata = _json_dict(metadata, "metadata")
        settings = {"input_dim": input_dim, "dtype": dtype, "shard_rows": shard_rows}
        cls._existing(path, resume, settings, metadata)  # wrong arguments fail first
        path.mkdir(parents=True, exist_ok=True)
        lock = _lock(path)
        try:  # again under the lock: another writer may have changed the store
            store = cls._existing(path, resume, settings, metadata)
            if store is None:
                store = cls(path, {
                    "format": FORMAT, "version": VERSION, **settings, "metadata": metadata,
                    "shards": [], "num_rows": 0, "progress": {}, "complete": False,
                })
                store._write_manifest()
        except BaseException:
            os.close(lock)
            raise
        store._lock = lock
        return store

    @classmethod
    def _existing(cls, path, resume, settings, metadata):
        """The store at `path` to resume (checked), or None where there is none."""
        if not os.path.lexists(path / MANIFEST):
            return None
        if not resume:
            raise FileExistsError(
                f"A store already exists at {path}. Pass `resume=True` to "
                "continue it, or choose another folder.")
        store = cls.open(path)
        store._check_resumable(settings, metadata)
        return store

    def _check_resumable(self, expected, metadata):
        found = {k: self.manifest[k] for k in expected}
        if found != expected:
            raise ValueError(
                f"Cannot resume the store at {self.path}: it was created with "
                f"{found}. Received: {expected}")
        stored = self.metadata
        keys = (stored.keys() | metadata.keys()) - ({FINGERPRINT_KEY} - metadata.keys())
        missing = object()
        differing = sorted(k for k in keys if stored.get(k, missing) != metadata.get(k, missing))
        if differing:
            raise ValueError(
                f"Cannot resume the store at {self.path}: its metadata differs in "
                f"{differing}, and resuming would mix two sources under the first one's "
                f"metadata. The store has {({k: stored.get(k) for k in differing})!r:.300}. "
                f"Received: metadata={({k: metadata.get(k) for k in differing})!r:.300}. "
                "Resume with the same metadata, or write to another folder.")
        if self.manifest["complete"]:
            raise ValueError(f"The store at {self.path} is complete; nothing to resume.")

    @classmethod
    def open(cls, path):
        """Opens a store for reading (no lock), checking its manifest and that
        every shard is a regular file of the right size."""
        path = pathlib.Path(path)
        manifest = _read_manifest(path)
        _check_manifest(manifest, path)
        store = cls(path, manifest)
        for index in range(store.num_shards):
            store._open_shard(index)[0].close()
        return store

    # ------------------------------------------------------------ writing
    def append(self, rows, source_index=None):
        """Adds rows; writes every shard that fills.

        `source_index` (optional) is the index of the input example these
        rows came from. The manifest's `progress` then says where a resumed
        harvest starts: `examples_done` examples are fully on disk, plus the
        first `rows_into_next_example` rows of the next one.
        """
        self._check_writable()
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.input_dim:
            raise ValueError(
                f"`rows` must have shape (n, {self.input_dim}). Received: "
                f"rows.shape={rows.shape}")
        if not (np.issubdtype(rows.dtype, np.floating) or np.issubdtype(rows.dtype, np.integer)):
            raise TypeError(f"`rows` must hold numbers. Received: rows.dtype={rows.dtype}")
        with np.errstate(over="ignore"):
            stored = rows.astype(self.dtype)
        if not np.isfinite(stored).all():  # after the cast: float16 overflows to Inf
            raise ValueError(self._non_finite_message(rows))
        self._buffer.append(stored)
        self._buffered_rows += len(rows)
        while self._buffered_rows >= self.shard_rows:
            data = np.concatenate(self._buffer)
            rest = data[self.shard_rows:]
            progress = None
            if source_index is not None:
                written_of_this = len(rows) - len(rest)
                progress = ({"examples_done": source_index + 1, "rows_into_next_example": 0}
                            if not len(rest) else
                            {"examples_done": source_index,
                             "rows_into_next_example": written_of_this})
            self._write_shard(data[:self.shard_rows], progress)
            self._buffer, self._buffered_rows = ([rest] if len(rest) else []), len(rest)

    def _non_finite_message(self, rows):
        if not np.isfinite(rows).all():
            return "`rows` contains NaN or Inf; the store keeps finite activations."
        largest = float(np.abs(rows).max())
        return (f"`rows` holds values up to {largest:.6g}, beyond the largest "
                f"{self.dtype} ({float(np.finfo(self.dtype).max):g}): stored as "
                f"{self.dtype} they would become Inf. Create the store with "
                'dtype="float32", or normalize the activations first.')

    def update_metadata(self, items):
        """Adds `items` (a JSON-serializable dict) to `metadata` and rewrites
        the manifest atomically. Only a writer (from `create`) may."""
        items = _json_dict(items, "items")
        self._check_writable()
        self.manifest["metadata"].update(items)
        self._write_manifest()

    @property
    def buffered_rows(self):
        """Rows appended but not yet written (they are lost in a crash)."""
        return self._buffered_rows

    def close(self, progress=None):
        """Writes the last, partial shard, marks the store complete and
        releases the lock. Closing a complete store does nothing."""
        if self.manifest["complete"]:
            self._release()
            return
        self._check_writable()
        if self._buffered_rows:
            self._write_shard(np.concatenate(self._buffer), progress)
            self._buffer, self._buffered_rows = [], 0
        self.manifest["complete"] = True
        self._write_manifest()
        self._release()

    def abandon(self):
        """Stops writing as a crash would: drops the buffered rows and
        releases the lock. `create(..., resume=True)` continues the store."""
        self._buffer, self._buffered_rows = [], 0
        self._release()

    def _release(self):
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            os.close(lock)  # closing the descriptor drops the flock

    def _check_writable(self):
        if self.manifest["complete"]:
            raise ValueError(f"The store at {self.path} is closed.")
        if self._lock is None:
            raise ValueError(
                f"The store at {self.path} is not open for writing: `open` reads a "
                "store, and an abandoned writer stops. Continue it with "
                "`ActivationStore.create(path, ..., resume=True)`.")

    def _write_shard(self, data, progress):
        name = shard_name(len(self.manifest["shards"]))
        size, digest = _write_atomically(
            self.path / name, lambda handle: np.save(handle, data, allow_pickle=False))
        self.manifest["shards"].append(
            {"file": name, "rows": int(len(data)), "bytes": size, "sha256": digest})
        self.manifest["num_rows"] += int(len(data))
        if progress is not None:
            self.manifest["progress"] = progress
        self._write_manifest()

    def _write_manifest(self):
        text = json.dumps(self.manifest, indent=1).encode()
        _write_atomically(self.path / MANIFEST, lambda handle: handle.write(text))

    # ------------------------------------------------------------ reading
    input_dim = property(lambda self: self.manifest["input_dim"])
    dtype = property(lambda self: self.manifest["dtype"])
    shard_rows = property(lambda self: self.manifest["shard_rows"])
    num_rows = property(lambda self: self.manifest["num_rows"])
    num_shards = property(lambda self: len(self.manifest["shards"]))
    metadata = property(lambda self: self.manifest["metadata"])
    progress = property(lambda self: self.manifest["progress"])

    def _open_shard(self, index):
        """`(file, stat, data offset)` of shard `index`, checked to be the
        regular file `shard_{index:05d}.npy` with the manifest's shape, dtype
        and size."""
        if not 0 <= index < self.num_shards:
            raise IndexError(f"`index` must be in [0, {self.num_shards}). "
                             f"Received: index={index}")
        shard = self.manifest["shards"][index]
        label = f"Shard {shard['file']} of {self.path}"
        try:
            handle, status = _open_regular(self.path / shard_name(index), label)
        except FileNotFoundError as error:
            raise StoreCorruptionError(str(error)) from None
        try:
            try:
                shape, fortran_order, dtype, offset = _read_header(handle)
            except ValueError as error:
                raise StoreCorruptionError(f"{label} cannot be read: {error}") from None
            expected = (shard["rows"], self.input_dim)
            if shape != expected or dtype != np.dtype(self.dtype) or fortran_order:
                raise StoreCorruptionError(
                    f"{label} has shape {shape} and dtype {dtype}; the manifest says "
                    f"{expected} {self.dtype}.")
            size = offset + shard["rows"] * self.input_dim * dtype.itemsize
            if status.st_size != size or shard.get("bytes", size) != size:
                raise StoreCorruptionError(
                    f"{label} has {status.st_size} bytes; the manifest implies "
                    f"{shard.get('bytes', size)}. Re-harvest it.")
        except BaseException:
            handle.close()
            raise
        return handle, status, offset

    def read_shard(self, index):
        """Shard `index` as a read-only memory-mapped array, its sha256
        verified on the first read and whenever the file changed since."""
        handle, status, offset = self._open_shard(index)
        shard = self.manifest["shards"][index]
        with handle:
            identity = (status.st_dev, status.st_ino, status.st_size,
                        status.st_mtime_ns, status.st_ctime_ns)
            if self._verified.get(index) != identity:
                self._verified.pop(index, None)
                if _sha256(handle) != shard["sha256"]:
                    raise StoreCorruptionError(
                        f"Shard {shard['file']} of {self.path} is corrupted: its "
                        "checksum does not match the manifest. Re-harvest it.")
                self._verified[index] = identity
            return np.memmap(handle, dtype=self.dtype, mode="r", offset=offset,
                             shape=(shard["rows"], self.input_dim))

    def read_all(self, dtype="float32"):
        """Every row in memory, in order (for stores that fit in memory)."""
        if not self.num_shards:
            return np.zeros((0, self.input_dim), dtype)
        return np.concatenate([self.read_shard(i).astype(dtype)
                               for i in range(self.num_shards)])
