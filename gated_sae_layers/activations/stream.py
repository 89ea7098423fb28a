"""Streams an `ActivationStore` into `fit` through `tf.data`: its rows, or
pairs of its column blocks."""

import numpy as np

from gated_sae_layers._validation import check_positive_int


def store_dataset(store, batch_size, shuffle_buffer=16384, seed=None,
                  shards_in_flight=4, dtype="float32"):
    """A `tf.data.Dataset` of `(batch, input_dim)` batches from a store.

    One pass over the dataset yields every row of the store exactly once:
    shards are visited in a shuffled order, `shards_in_flight` of them
    interleaved row by row, rows shuffled again through a buffer of
    `shuffle_buffer` rows (so a batch mixes shards), then batched, cast and
    prefetched. Only the shards in flight and the buffer are in memory. Pass
    it to `fit` with `epochs=`; each epoch reshuffles.

    Args:
        store: an `ActivationStore`.
        batch_size: int, rows per batch (the last batch may be smaller).
        shuffle_buffer: int >= 1, rows in the shuffle buffer (1 = no shuffle
            beyond the shard order).
        seed: optional int for a reproducible order.
        shards_in_flight: int, shards read at once.
        dtype: the batches' dtype.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        ValueError: the store has no rows. A shard that changed on disk
            since it was verified fails its checksum again in a later epoch
            (`StoreCorruptionError`, surfaced by `tf.data` as an error).
    """
    import tensorflow as tf

    batch_size = check_positive_int(batch_size, "batch_size")
    shuffle_buffer = check_positive_int(shuffle_buffer, "shuffle_buffer")
    shards_in_flight = check_positive_int(shards_in_flight, "shards_in_flight")
    if not store.num_rows:
        raise ValueError(
            f"`store` has no rows to stream: harvest into it first. Received: the "
            f"store at {store.path} with num_rows=0")
    width = store.input_dim

    def load(index):
        return np.asarray(store.read_shard(int(index)), dtype=dtype)

    def shard_rows(index):
        rows = tf.numpy_function(load, [index], tf.as_dtype(dtype))
        rows = tf.ensure_shape(rows, (None, width))
        return tf.data.Dataset.from_tensor_slices(rows)

    shards = tf.data.Dataset.range(store.num_shards)
    if store.num_shards > 1:
        shards = shards.shuffle(store.num_shards, seed=seed,
                                reshuffle_each_iteration=True)
    rows = shards.interleave(shard_rows, cycle_length=shards_in_flight,
                             block_length=1, num_parallel_calls=1, deterministic=True)
    # The row count is known: telling tf.data lets `fit` size its epochs.
    rows = rows.apply(tf.data.experimental.assert_cardinality(store.num_rows))
    if shuffle_buffer > 1:
        rows = rows.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return rows.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def paired_dataset(store, inputs, targets, batch_size, shuffle_buffer=16384, seed=None):
    """A `tf.data.Dataset` of `(x, y)` batches from a store of several blocks.

    For transcoders (read one place, reconstruct another) and crosscoders:
    the rows of a harvest of several layers (see `ActivationStore.blocks`)
    are streamed as by `store_dataset` (same shuffling, same reading) and
    split after shuffling, so `x[i]` and `y[i]` always come from the same
    row: `x` is the `inputs` blocks side by side, `y` the `targets` blocks,
    each in the order given. A block may be in both.

    Args:
        store: an `ActivationStore`.
        inputs: a block's name or index, or a list of them.
        targets: a block's name or index, or a list of them.
        batch_size: int, rows per batch (the last batch may be smaller).
        shuffle_buffer: int >= 1, rows in the shuffle buffer.
        seed: optional int for a reproducible order.

    Returns:
        A `tf.data.Dataset` of `(x, y)`, float32, of shapes
        `(batch, input width)` and `(batch, target width)`.

    Raises:
        ValueError: an unknown block (the message lists the store's
            blocks), or a store without rows.

    Example:

    >>> import tempfile, numpy as np
    >>> from gated_sae_layers.activations import ActivationStore
    >>> store = ActivationStore.create(tempfile.mkdtemp(), 3, dtype="float32",
    ...     metadata={"blocks": [{"name": "in", "width": 2}, {"name": "out", "width": 1}]})
    >>> store.append(np.arange(12, dtype="float32").reshape(4, 3)); store.close()
    >>> x, y = next(iter(paired_dataset(store, "in", "out", batch_size=4, seed=0)))
    >>> bool(np.all(y[:, 0] == x[:, 0] + 2)), tuple(x.shape), tuple(y.shape)
    (True, (4, 2), (4, 1))
    """
    import tensorflow as tf

    x_columns = _block_columns(store, inputs, "inputs")
    y_columns = _block_columns(store, targets, "targets")

    def take(rows, columns):
        parts = [rows[:, start:stop] for start, stop in columns]
        return parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)

    rows = store_dataset(store, batch_size, shuffle_buffer, seed)
    return rows.map(lambda batch: (take(batch, x_columns), take(batch, y_columns)))


def _block_columns(store, selection, name):
    """`[(start, stop), ...]` of the blocks `selection` (a name or index, or a
    list of them) of `store`; a `ValueError` listing the blocks otherwise."""
    blocks = store.blocks
    names = [block[0] for block in blocks]
    chosen = list(selection) if isinstance(selection, (list, tuple)) else [selection]
    columns = []
    for block in chosen:
        if isinstance(block, str) and block in names:
            columns.append(blocks[names.index(block)][1:])
        elif (isinstance(block, (int, np.integer)) and not isinstance(block, bool)
              and 0 <= block < len(blocks)):
            columns.append(blocks[int(block)][1:])
        else:
            columns = []
            break
    if not columns:
        raise ValueError(
            f"`{name}` must be one or more of the store's blocks {names} (by name, or "
            f"by index 0 to {len(names) - 1}). Received: {name}={selection!r}")
    return columns
