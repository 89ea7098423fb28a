"""Activations uploaded to the accelerator in large chunks, one chunk ahead.

Used by the device-resident `fit` (`models/device_resident_fit.py`): the rows
of an in-memory array or of an `ActivationStore` go to the device a chunk at
a time, each checked for NaN/Inf there once, before any step uses it.
"""

import numpy as np

from gated_sae_layers._validation import non_finite_rows_message

# Fraction of the device's free memory one chunk may use (two are resident
# while the next one uploads).
CHUNK_MEMORY_FRACTION = 0.25
# Chunk size where the device reports no memory figures (the CPU).
HOST_CHUNK_BYTES = 1 << 30


def default_chunk_rows(row_bytes, batch_size):
    """Rows per device chunk: a multiple of `batch_size` that fits the budget."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        budget = int(free * CHUNK_MEMORY_FRACTION)
    else:
        budget = HOST_CHUNK_BYTES
    return max(batch_size, budget // row_bytes // batch_size * batch_size)


class DeviceChunks:
    """Uploads rows to the device chunk by chunk, one chunk ahead.

    The rows come from an in-memory array (`from_array`) or from the shards
    of an `ActivationStore` (`from_store`: whole shards per chunk, each read
    and checksummed when its chunk uploads), so data larger than the device,
    or than the host's memory, streams through.
    """

    def __init__(self, bounds, read, name):
        import jax

        self._jax = jax
        self.bounds = bounds            # global (start, stop) row per chunk
        self._read = read               # chunk index -> host array
        self.name = name
        self.num_rows = bounds[-1][1]
        self._resident = {}

    @classmethod
    def from_array(cls, x, chunk_rows):
        rows = int(x.shape[0])
        bounds = [(start, min(start + chunk_rows, rows))
                  for start in range(0, rows, chunk_rows)]
        if len(bounds) == 1:            # no slice: a device array is not copied
            return cls(bounds, lambda i: x, "x")
        return cls(bounds, lambda i: x[bounds[i][0]:bounds[i][1]], "x")

    @classmethod
    def from_store(cls, store, chunk_rows):
        groups, bounds, start = [], [], 0
        shards_per_chunk = max(1, chunk_rows // store.shard_rows)
        for first in range(0, store.num_shards, shards_per_chunk):
            group = range(first, min(first + shards_per_chunk, store.num_shards))
            rows = sum(store.manifest["shards"][i]["rows"] for i in group)
            groups.append(group)
            bounds.append((start, start + rows))
            start += rows

        def read(index):
            parts = [store.read_shard(i) for i in groups[index]]
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        return cls(bounds, read, f"the store at {store.path}")

    def prefetch(self, index):
        """Starts the upload (and the finiteness check) of chunk `index`."""
        if index in self._resident:
            return
        chunk = self._jax.device_put(self._read(index))
        self._resident[index] = (chunk, self._jax.numpy.isfinite(chunk).all())

    def get(self, index):
        """The checked device chunk `index`; drops the others but one ahead."""
        self.prefetch(index)
        chunk, finite = self._resident[index]
        if not bool(finite):
            rows = np.asarray(self._jax.numpy.isfinite(chunk).all(axis=1))
            bad = np.flatnonzero(~rows) + self.bounds[index][0]
            raise ValueError(non_finite_rows_message(
                self.name, bad, self.num_rows))
        if len(self.bounds) > 1:
            self._resident = {index: self._resident[index]}
        return chunk
