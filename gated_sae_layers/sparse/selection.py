"""Which latents of each row get a slot: the selections of the sparse path.

Computed from the dense pre-activation, without gradient, before the
differentiable sparse step. A fixed-k encoder selects exactly its top k;
a data-dependent encoder (gated, ReLU, JumpReLU) selects its support, the
latents whose score is > 0, into a static number of slots (the cap), and
says when some row has more than that (the step then falls back to the
dense path).
"""

from keras import ops

from gated_sae_layers.sparse import host


TWO_STAGE_MIN_WIDTH = 8192
"""Rows at least this wide take the two-stage top-k (measured 2-4x faster on a
CPU at 16k-131k latents; no faster at 4k)."""


def _block_size(width, k):
    block = 32 if width >= 512 * k else 16
    if width < TWO_STAGE_MIN_WIDTH or width % block or width // block < k:
        return None
    return block


def top_k_indices(scores, k, bias=None):
    """`(rows, k)` int32: the `k` largest scores of each row, as `keep_top_k` picks them.

    `bias` (`(width,)`, optional) is added to every row first (the Numba
    kernel adds it on the fly, without a `(rows, width)` sum).

    The same set as the dense path's `ops.top_k(..., sorted=False)`, ties
    included (equal scores: the lower index wins). Wide rows take two
    stages: the `k` blocks of `block` latents with the largest maxima (the
    top `k` entries lie in them: an entry outside them has `k` larger block
    maxima before it), then the top `k` of those blocks' entries, laid out
    in increasing latent order so that ties break as in one `top_k`.

    Example:

    >>> import numpy as np
    >>> scores = np.random.default_rng(0).normal(size=(2, 16384)).astype("float32")
    >>> picked = np.sort(np.asarray(top_k_indices(scores, 8)), axis=1)
    >>> bool((picked == np.sort(np.argsort(-scores, axis=1)[:, :8], axis=1)).all())
    True
    """
    if host.active(scores.dtype) and (bias is None or host.active(bias.dtype)):
        return host.top_k_indices(scores, k, bias)
    if bias is not None:
        scores = scores + bias
    width = scores.shape[-1]
    block = _block_size(width, k)
    if block is None:
        return ops.cast(ops.top_k(scores, k, sorted=False)[1], "int32")
    rows = ops.shape(scores)[0]
    grid = ops.reshape(scores, (rows, width // block, block))
    chosen = ops.sort(ops.cast(ops.top_k(ops.max(grid, axis=-1), k, sorted=False)[1],
                               "int32"), axis=-1)
    candidates = ops.reshape(
        ops.take_along_axis(grid, ops.expand_dims(chosen, -1), axis=1),
        (rows, k * block))
    picked = ops.cast(ops.top_k(candidates, k, sorted=False)[1], "int32")
    return (ops.take_along_axis(chosen, picked // block, axis=1) * block
            + picked % block)


class Selection:
    """What an encoder selected for one batch, before the differentiable sparse step.

    Built by the encoder's `sparse_selection`, without gradient, and read by
    its `sparse_call` and by the train step.

    Args:
        product: `(rows, latent_dim)`, the encoder's matmul `inputs @ W`
            (no gradient): the only dense `(rows, latent_dim)` tensor of the
            sparse step.
        indices: `(rows, slots)` int32, the latents that get a slot.
        support_sizes: `None` for an encoder whose slots always hold its
            whole support (TopK), else `(rows,)` int32, the size of each
            row's support; a row whose support exceeds the slots makes the
            step fall back to the dense path.
        extra: dict of anything else the encoder's `sparse_call` needs.
        row_blocks: int >= 1; more than 1 when the rows are ordered by
            support size, largest first (`by_support_size`): the kernels'
            loops then run per block of rows, each to its own largest
            support (`active_slots`).
        product_at_slots: `None`, or `(rows, slots)`, `product` at the
            slots, for a selection whose rows were reordered
            (`by_support_size`: its `product` is `None`, the dense product
            is never reordered).
    """

    __slots__ = ("product", "indices", "support_sizes", "extra", "row_blocks",
                 "product_at_slots")

    def __init__(self, product, indices, support_sizes=None, extra=None, row_blocks=1,
                 product_at_slots=None):
        self.product = product
        self.indices = indices
        self.support_sizes = support_sizes
        self.extra = dict(extra or {})
        self.row_blocks = int(row_blocks)
        self.product_at_slots = product_at_slots

    @property
    def slots(self):
        return self.indices.shape[1]

    def with_extra(self, **extra):
        """A copy with `extra` entries added."""
        return Selection(self.product, self.indices, self.support_sizes,
                         {**self.extra, **extra}, self.row_blocks, self.product_at_slots)

    def by_support_size(self, row_blocks):
        """`(order, selection)`: the rows ordered by support size, largest first.

        `order` `(rows,)` int32 is the permutation of the rows (the batch is
        taken in that order: `ops.take(x, order, axis=0)`); the selection's
        row-shaped tensors come in that order, with `row_blocks` blocks.
        The dense `(rows, latent_dim)` product is not reordered: the new
        selection holds it at the slots only (`product_at_slots`). For a
        data-dependent encoder only (`support_sizes` set, `extra` holding
        nothing row-shaped).
        """
        order = ops.cast(ops.argsort(-self.support_sizes), "int32")

        def take(tensor):
            return ops.take(tensor, order, axis=0)

        at_slots = take(ops.take_along_axis(self.product, self.indices, axis=1))
        return order, Selection(None, take(self.indices), take(self.support_sizes),
                                self.extra, row_blocks, at_slots)

    def with_row_ends(self):
        """The same selection with one block per row: each row's loops end at its
        own support (`active_slots` is then `(rows,)`). For the Numba kernels
        only (`host`), which take an end per row; the `keras.ops` loops would
        unroll one loop per row."""
        return Selection(self.product, self.indices, self.support_sizes, self.extra,
                         self.indices.shape[0], self.product_at_slots)

    @property
    def may_overflow(self):
        """Whether a batch can have more active latents in a row than slots."""
        return self.support_sizes is not None

    def overflow(self):
        """Bool scalar: some row's support does not fit in the slots."""
        if self.support_sizes is None:
            return ops.convert_to_tensor(False)
        return ops.any(self.support_sizes > self.slots)

    @property
    def active_slots(self):
        """`None` (TopK: every slot can fire), or where the kernels' loops stop.

        Past it, every row's slots hold entries outside its support, which
        the loops skip. One block of rows: the int32 scalar
        `min(largest_support(), slots)`. `row_blocks` blocks of rows
        ordered largest support first: `(row_blocks,)` int32, the support
        of each block's first row (capped at `slots`); block `b` is rows
        `b * ceil(rows / row_blocks)` on (`kernels.row_blocks`).
        """
        if self.support_sizes is None:
            return None
        rows = self.support_sizes.shape[0]
        if self.row_blocks == 1 or rows is None:
            return ops.minimum(self.largest_support(), self.slots)
        size = -(-rows // self.row_blocks)
        firsts = ops.take(self.support_sizes,
                          ops.arange(0, rows, size, dtype="int32"), axis=0)
        return ops.minimum(firsts, self.slots)

    def largest_support(self):
        """Int32 scalar: the largest support of a row (the slots for TopK)."""
        if self.support_sizes is None:
            return ops.convert_to_tensor(self.slots, "int32")
        return ops.max(self.support_sizes)


def rows_of_flat_entries(flat_indices, keep, num_rows, latent_dim, slots):
    """Lays entries given by flat positions in `(num_rows, latent_dim)` out as slots per row.

    BatchTopK keeps the `rows * k` largest entries of a whole batch, so a
    row keeps a varying number of latents; this gives each row its kept
    latents in `slots` slots, in increasing latent order.

    Args:
        flat_indices: `(n,)` int32, positions `row * latent_dim + latent`,
            distinct.
        keep: `(n,)` bool, which entries to lay out (the others are dropped).
        num_rows, latent_dim: ints, the dense shape.
        slots: int, the slots per row.

    Returns:
        `(indices, valid, sizes)`: `indices` `(num_rows, slots)` int32, the
        latent of each slot (0 in an empty slot); `valid` `(num_rows, slots)`
        bool, which slots hold a kept entry; `sizes` `(num_rows,)` int32, the
        kept entries of each row (a row with more than `slots` loses some).

    Example:

    >>> import numpy as np
    >>> indices, valid, sizes = rows_of_flat_entries(
    ...     np.array([5, 0, 2, 4], "int32"), np.array([True, True, True, False]),
    ...     num_rows=2, latent_dim=3, slots=2)
    >>> np.asarray(indices).tolist(), np.asarray(valid).tolist(), np.asarray(sizes).tolist()
    ([[0, 2], [2, 0]], [[True, True], [True, False]], [2, 1])
    """
    # Dropped entries sort after every kept one, into a row of their own.
    beyond = num_rows * latent_dim
    position = ops.sort(ops.where(keep, flat_indices, beyond + ops.zeros_like(flat_indices)))
    row = position // latent_dim
    kept = row < num_rows
    sizes = ops.segment_sum(ops.cast(kept, "int32"), ops.where(kept, row, 0),
                            num_segments=num_rows)
    starts = ops.cumsum(sizes) - sizes
    rank = ops.arange(ops.shape(position)[0], dtype="int32") - ops.take(
        starts, ops.minimum(row, num_rows - 1), axis=0)
    fits = ops.logical_and(kept, rank < slots)
    # Slot `row * slots + rank`, or one spare slot past the end for the rest.
    target = ops.where(fits, row * slots + rank, num_rows * slots)
    table = ops.scatter(ops.expand_dims(target, -1),
                        ops.where(fits, position % latent_dim + 1, 0),
                        (num_rows * slots + 1,))
    table = ops.reshape(table[:-1], (num_rows, slots))
    return ops.maximum(table - 1, 0), table > 0, sizes
