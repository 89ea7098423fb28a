"""Top-k selection, per row and over a batch, as pure functions in `keras.ops`.

The selection behind `TopKEncoder` and `BatchTopKEncoder` (TF and JAX, jit or not).
"""

from keras import ops


def _rows(values):
    return ops.reshape(values, (-1, values.shape[-1]))


def keep_top_k(values, k):
    """Keeps the `k` largest entries of each row (last axis), zeros elsewhere.

    Exactly `k` entries per row are kept, ties broken by `ops.top_k`, so a
    row never has more than `k` nonzeros. Gradients flow to the kept entries.

    Args:
        values: `(..., width)` float tensor.
        k: int, `1 <= k <= width`.

    Returns:
        `(..., width)`, `values` at the top-k positions of each row, 0 elsewhere.
    """
    rows = _rows(values)
    top_values, top_indices = ops.top_k(rows, k, sorted=False)
    row_ids = ops.repeat(ops.expand_dims(ops.arange(ops.shape(rows)[0]), 1), k, axis=1)
    coordinates = ops.stack(
        [ops.cast(row_ids, "int32"), ops.cast(top_indices, "int32")], axis=-1)
    kept = ops.scatter(ops.reshape(coordinates, (-1, 2)),
                       ops.reshape(top_values, (-1,)), ops.shape(rows))
    return ops.reshape(kept, ops.shape(values))


def keep_top_k_over_batch(values, k):
    """Keeps the `rows * k` largest entries of the whole batch, zeros elsewhere.

    BatchTopK (Bussmann et al. 2024, arXiv:2412.06410): the budget `k` per
    row is pooled over all rows (every axis but the last counts as a row).

    Args:
        values: `(..., width)` float tensor.
        k: int, the average number of kept entries per row, `<= width`.

    Returns:
        `(kept, smallest_positive)`: `kept` has the shape of `values`;
        `smallest_positive` is the smallest kept value that is > 0 (a
        scalar; `inf` when no kept value is positive).
    """
    top_values, top_indices = top_k_over_batch(values, k)
    kept = ops.scatter(ops.expand_dims(top_indices, -1), top_values,
                       (ops.size(values),))
    return ops.reshape(kept, ops.shape(values)), smallest_positive(top_values)


def top_k_over_batch(values, k):
    """The `rows * k` largest entries of `values`, as `keep_top_k_over_batch` keeps them.

    Args:
        values: `(..., width)` float tensor.
        k: int, the average number of kept entries per row.

    Returns:
        `(top_values, flat_indices)`, both `(rows * k,)`: the kept values
        and their int32 positions in `values` flattened.
    """
    flat = ops.reshape(values, (-1,))
    num_rows = ops.shape(_rows(values))[0]
    top_values, top_indices = ops.top_k(flat, num_rows * k, sorted=False)
    return top_values, ops.cast(top_indices, "int32")


def smallest_positive(values):
    """The smallest entry of `values` that is > 0; `inf` when none is."""
    return ops.min(ops.where(values > 0, values, float("inf")))
