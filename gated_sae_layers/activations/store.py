"""A sharded on-disk store of activations that can exceed memory.

Layout of a store folder:

```
manifest.json          # format, input_dim, dtype, shards with row counts and sha256
shard_00000.npy        # (rows, input_dim) arrays, written whole then renamed
shard_00001.npy
...
```

Every shard is written to a temporary file, flushed and renamed into place,
and only then listed in the manifest (also replaced atomically): a crash
loses at most the shard in flight, never a listed one. Shards are plain
`.npy` files read with `allow_pickle=False`; reading verifies each shard's
shape and checksum once and raises `StoreCorruptionError` naming the shard.
"""

import hashlib
import json
import os
import pathlib

import numpy as np

from gated_sae_layers._validation import check_positive_int

FORMAT = "gated_sae_layers.activation_store"
VERSION = 1
MANIFEST = "manifest.json"
DTYPES = ("float16", "float32")


class StoreCorruptionError(ValueError):
    """A store's manifest or a shard does not match what was written."""


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path, write):
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class ActivationStore:
    """Fixed-size shards of `(rows, input_dim)` activations with a manifest.

    Create with `ActivationStore.create(path, input_dim)`, add rows with
    `append` (full shards are written as they fill), and `close()` to write
    the last, partial shard. `ActivationStore.open(path)` reads one back.
    `create(..., resume=True)` on an existing, unfinished store continues
    after its last complete shard.

    Args (of `create`):
        path: the store's folder (created if needed).
        input_dim: int, the activation width.
        dtype: `"float16"` (half the disk) or `"float32"`.
        shard_rows: int, rows per shard (the last shard may be shorter).
        metadata: a JSON-serializable dict (model, layer, ...) kept in the
            manifest.
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
        self._verified = set()

    # ----------------------------------------------------------- creation
    @classmethod
    def create(cls, path, input_dim, dtype="float16", shard_rows=65536,
               metadata=None, resume=False):
        path = pathlib.Path(path)
        input_dim = check_positive_int(input_dim, "input_dim")
        shard_rows = check_positive_int(shard_rows, "shard_rows")
        if dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {DTYPES}. Received: dtype={dtype!r}")
        if (path / MANIFEST).exists():
            if not resume:
                raise FileExistsError(
                    f"A store already exists at {path}. Pass `resume=True` to "
                    "continue it, or choose another folder.")
            store = cls.open(path)
            expected = {"input_dim": input_dim, "dtype": dtype, "shard_rows": shard_rows}
            found = {k: store.manifest[k] for k in expected}
            if found != expected:
                raise ValueError(
                    f"Cannot resume the store at {path}: it was created with "
                    f"{found}. Received: {expected}")
            if store.manifest["complete"]:
                raise ValueError(f"The store at {path} is complete; nothing to resume.")
            return store
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT, "version": VERSION, "input_dim": input_dim,
            "dtype": dtype, "shard_rows": shard_rows, "metadata": metadata or {},
            "shards": [], "num_rows": 0, "progress": {}, "complete": False,
        }
        store = cls(path, manifest)
        store._write_manifest()
        return store

    @classmethod
    def open(cls, path):
        """Opens a store, checking its manifest and that every shard exists."""
        path = pathlib.Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"No activation store at {path}: {MANIFEST} is missing.")
        except json.JSONDecodeError as error:
            raise StoreCorruptionError(f"The manifest of {path} is not valid JSON: {error}")
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise StoreCorruptionError(
                f"{path / MANIFEST} is not a version-{VERSION} activation store manifest.")
        for shard in manifest["shards"]:
            if not (path / shard["file"]).exists():
                raise StoreCorruptionError(f"Shard {shard['file']} of {path} is missing.")
        if sum(s["rows"] for s in manifest["shards"]) != manifest["num_rows"]:
            raise StoreCorruptionError(f"The row counts in {path / MANIFEST} disagree.")
        return cls(path, manifest)

    # ------------------------------------------------------------ writing
    def append(self, rows, source_index=None):
        """Adds rows; writes every shard that fills.

        `source_index` (optional) is the index of the input example these
        rows came from. The manifest's `progress` then says where a resumed
        harvest starts: `examples_done` examples are fully on disk, plus the
        first `rows_into_next_example` rows of the next one.
        """
        if self.manifest["complete"]:
            raise ValueError(f"The store at {self.path} is closed.")
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.input_dim:
            raise ValueError(
                f"`rows` must have shape (n, {self.input_dim}). Received: "
                f"rows.shape={rows.shape}")
        if not np.isfinite(rows).all():
            raise ValueError("`rows` contains NaN or Inf; the store keeps finite activations.")
        self._buffer.append(rows.astype(self.dtype))
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

    @property
    def buffered_rows(self):
        """Rows appended but not yet written (they are lost in a crash)."""
        return self._buffered_rows

    def close(self, progress=None):
        """Writes the last, partial shard and marks the store complete."""
        if self._buffered_rows:
            self._write_shard(np.concatenate(self._buffer), progress)
            self._buffer, self._buffered_rows = [], 0
        self.manifest["complete"] = True
        self._write_manifest()

    def _write_shard(self, data, progress):
        name = f"shard_{len(self.manifest['shards']):05d}.npy"
        _write_atomically(self.path / name,
                          lambda handle: np.save(handle, data, allow_pickle=False))
        self.manifest["shards"].append(
            {"file": name, "rows": int(len(data)), "sha256": _sha256(self.path / name)})
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

    def read_shard(self, index):
        """Shard `index` as a read-only memory-mapped array, verified once."""
        shard = self.manifest["shards"][index]
        path = self.path / shard["file"]
        if index not in self._verified:
            if _sha256(path) != shard["sha256"]:
                raise StoreCorruptionError(
                    f"Shard {shard['file']} of {self.path} is corrupted: its "
                    "checksum does not match the manifest. Re-harvest it.")
            self._verified.add(index)
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise StoreCorruptionError(f"Shard {shard['file']} cannot be read: {error}")
        if data.shape != (shard["rows"], self.input_dim) or data.dtype != self.dtype:
            raise StoreCorruptionError(
                f"Shard {shard['file']} has shape {data.shape} and dtype {data.dtype}; "
                f"the manifest says ({shard['rows']}, {self.input_dim}) {self.dtype}.")
        return data

    def read_all(self, dtype="float32"):
        """Every row in memory, in order (for stores that fit in memory)."""
        if not self.num_shards:
            return np.zeros((0, self.input_dim), dtype)
        return np.concatenate([self.read_shard(i).astype(dtype)
                               for i in range(self.num_shards)])
