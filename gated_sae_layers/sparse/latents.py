"""`SparseLatents`: a `(rows, latent_dim)` tensor held as the few entries that can be nonzero."""

from keras import ops


class SparseLatents:
    """A `(rows, latent_dim)` latent tensor kept as `slots` entries per row.

    ```
    dense[r, indices[r, s]] = values[r, s]      for every slot s
    dense[r, j]             = 0 (or <= 0)       for every other latent j
    ```

    The sparse training path (`compile(sparse=...)`, `docs/sparse_training.md`)
    passes these between the layers of an SAE instead of dense
    `(rows, latent_dim)` tensors: the decoder gathers the `indices` rows of
    `W_dec` and sums them weighted by `values`. The indices of a row are
    distinct. For a latent output (`latents`, `aux_latents`) every entry
    outside the slots is exactly 0; for a pre-activation output (the gated
    SAE's `gating_pre_activation`) it is <= 0. A loss term or metric that
    reads a `SparseLatents` therefore depends only on the positive part
    (`relu`, `> 0`), and declares so with `supports_sparse_latents = True`.

    It is a plain Python object, not a tensor: it lives only inside one
    traced training step and is never saved.

    Args:
        values: `(rows, slots)` float tensor, the entries at the slots.
        indices: `(rows, slots)` int32 tensor, the latent of each slot.
        latent_dim: int, the width of the dense tensor.
        active_slots: `None`, or an int32 scalar (or a `(blocks,)` vector,
            one per block of rows: `kernels.row_blocks`): in every row, the
            slots from `active_slots` on hold entries outside the support
            (value 0, or <= 0 for a pre-activation, and no gradient), so the
            decoder's loops stop there (`sparse_decode`).

    Example:

    >>> import numpy as np
    >>> latents = SparseLatents(np.array([[2.0, 0.0], [1.0, 3.0]], "float32"),
    ...                         np.array([[3, 0], [1, 2]], "int32"), latent_dim=4)
    >>> np.asarray(latents.to_dense()).tolist()
    [[0.0, 0.0, 0.0, 2.0], [0.0, 1.0, 3.0, 0.0]]
    >>> np.asarray(latents.active_counts()).tolist(), np.asarray(latents.fired_counts()).tolist()
    ([1.0, 2.0], [0.0, 1.0, 1.0, 1.0])
    """

    __slots__ = ("values", "indices", "latent_dim", "active_slots")

    def __init__(self, values, indices, latent_dim, active_slots=None):
        self.values = values
        self.indices = indices
        self.latent_dim = int(latent_dim)
        self.active_slots = active_slots

    @property
    def shape(self):
        """`(rows, latent_dim)`, the shape of the dense tensor."""
        return (self.values.shape[0], self.latent_dim)

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def slots(self):
        """The number of slots per row (static)."""
        return self.values.shape[1]

    def with_values(self, values):
        """The same slots holding `values` (`(rows, slots)`)."""
        return SparseLatents(values, self.indices, self.latent_dim, self.active_slots)

    def active(self):
        """`(rows, slots)` bool: which slots hold a positive value."""
        return self.values > 0

    def active_counts(self, dtype="float32"):
        """`(rows,)`: the number of positive entries of each row."""
        return ops.sum(ops.cast(self.active(), dtype), axis=1)

    def fired_counts(self, dtype="float32", row_weights=None):
        """`(latent_dim,)`: for each latent, the rows in which it is positive.

        `row_weights` (`(rows,)`, optional): a row counts only where its
        weight is > 0.
        """
        fired = ops.cast(self.active(), dtype)
        if row_weights is not None:
            fired = fired * ops.cast(ops.reshape(row_weights, (-1, 1)) > 0, dtype)
        return ops.scatter(ops.reshape(self.indices, (-1, 1)),
                           ops.reshape(fired, (-1,)), (self.latent_dim,))

    def to_dense(self):
        """The `(rows, latent_dim)` tensor (zeros outside the slots).

        For tests and debugging: the training path never builds it.
        """
        rows = ops.shape(self.values)[0]
        row_ids = ops.repeat(ops.expand_dims(ops.arange(rows, dtype="int32"), 1),
                             self.slots, axis=1)
        coordinates = ops.stack([row_ids, ops.cast(self.indices, "int32")], axis=-1)
        return ops.scatter(ops.reshape(coordinates, (-1, 2)),
                           ops.reshape(self.values, (-1,)), (rows, self.latent_dim))

    def __repr__(self):
        return (f"SparseLatents(shape={self.shape}, slots={self.slots}, "
                f"dtype={self.dtype})")
