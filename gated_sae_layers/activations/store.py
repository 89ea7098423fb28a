"""A sharded on-disk store of activations that can exceed memory.

Layout of a store folder:

```
manifest.json          # format, input_dim, dtype, metadata (with `blocks`, the
                       # column blocks, where rows join several layers), shards
                       # (file, rows, bytes, sha256), progress
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

import json
import os
import pathlib

import numpy as np

from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.activations._store_files import (
    BLOCKS_KEY, DTYPES, FORMAT, LOCK, MANIFEST, VERSION, StoreCorruptionError,
    StoreLockedError, _check_manifest, _lock, _open_shard, _read_manifest, _sha256,
    _write_atomically, block_ranges, blocks_problem, shard_name)

# Written into `metadata` and checked by `harvest`, not by `create(resume=True)`.
FINGERPRINT_KEY = "inputs_fingerprint"
# What `harvest` writes into `metadata`: a resume need not pass them again.
HARVEST_KEYS = (FINGERPRINT_KEY, BLOCKS_KEY)


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
            manifest. A resume must pass the same metadata (what `harvest`
            records, `inputs_fingerprint` and `blocks`, aside: `harvest`
            checks those). `metadata["blocks"]`, if given, names the
            column blocks (see `blocks`).
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
        problem = blocks_problem(metadata, input_dim)
        if problem:
            raise ValueError(f"Invalid `metadata`: {problem}. Received: "
                             f"metadata[{BLOCKS_KEY!r}]={metadata[BLOCKS_KEY]!r:.200}")
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
        keys = (stored.keys() | metadata.keys()) - (set(HARVEST_KEYS) - metadata.keys())
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
        problem = blocks_problem({**self.metadata, **items}, self.input_dim)
        if problem:
            raise ValueError(f"Invalid `items`: {problem}. Received: "
                             f"items={items!r:.200}")
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

    @property
    def blocks(self):
        """The column blocks of the rows: a tuple of `(name, start, stop)`.

        A harvest of several layers (or places) stores each row as their
        outputs side by side, and records the blocks in
        `metadata["blocks"]` (`[{"name": ..., "width": ...}, ...]`, in
        column order); block `i` is `rows[:, start_i:stop_i]`. A store
        without recorded blocks has one block spanning the whole width,
        named after `metadata["layer"]` where that is a string (else
        `"activations"`). Read-only; recorded blocks are validated on
        every read (names non-empty and distinct, widths integers >= 1
        summing to `input_dim`): a manifest changed since raises
        `StoreCorruptionError`.

        Example:

        >>> import tempfile
        >>> store = ActivationStore.create(tempfile.mkdtemp(), input_dim=5, metadata={
        ...     "blocks": [{"name": "mlp_in", "width": 3}, {"name": "mlp_out", "width": 2}]})
        >>> store.blocks
        (('mlp_in', 0, 3), ('mlp_out', 3, 5))
        """
        return block_ranges(self.metadata, self.input_dim, self.path / MANIFEST)

    def _open_shard(self, index):
        """`(file, stat, data offset)` of shard `index`, checked to be the
        regular file `shard_{index:05d}.npy` with the manifest's shape, dtype
        and size."""
        if not 0 <= index < self.num_shards:
            raise IndexError(f"`index` must be in [0, {self.num_shards}). "
                             f"Received: index={index}")
        return _open_shard(self.path, index, self.manifest["shards"][index],
                           self.input_dim, self.dtype)

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


__all__ = [
    "ActivationStore", "BLOCKS_KEY", "DTYPES", "FINGERPRINT_KEY", "FORMAT", "HARVEST_KEYS",
    "LOCK", "MANIFEST", "StoreCorruptionError", "StoreLockedError", "VERSION", "shard_name",
]
