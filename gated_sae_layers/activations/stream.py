"""Streams an `ActivationStore` into `fit` through `tf.data`."""

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
