"""`support_indices`: the latents with a positive score of each row, in a static number of slots.

The selection of the data-dependent encoders (gated, ReLU, JumpReLU) on the
sparse path, found without a sort or a top-k by counting packed bits.
"""

from keras import ops

from gated_sae_layers.sparse import host


WORD_BITS = 16
"""Latents per packed word of `support_indices` (16, so an int32 word is never negative)."""
GROUP_WORDS = 16
"""Words per group in `support_indices`' two-step count."""


def _popcount(words):
    """The set bits of each int32 word holding at most `WORD_BITS` bits."""
    words = words - ops.bitwise_and(ops.right_shift(words, 1), 0x5555)
    words = ops.bitwise_and(words, 0x3333) + ops.bitwise_and(ops.right_shift(words, 2),
                                                             0x3333)
    words = ops.bitwise_and(words + ops.right_shift(words, 4), 0x0F0F)
    return ops.bitwise_and(words + ops.right_shift(words, 8), 0x1F)


def _packed(active):
    """`(rows, latent_dim)` bool -> `(rows, words)` int32, `WORD_BITS` latents a word.

    Bit `b` of word `w` is latent `w * WORD_BITS + b`; the bits past
    `latent_dim` of the last word are 0.
    """
    rows, width = ops.shape(active)[0], active.shape[-1]
    words = -(-width // WORD_BITS)
    bits = ops.cast(active, "int32")
    if words * WORD_BITS != width:
        bits = ops.pad(bits, ((0, 0), (0, words * WORD_BITS - width)))
    weights = ops.convert_to_tensor([1 << bit for bit in range(WORD_BITS)], "int32")
    return ops.sum(ops.reshape(bits, (rows, words, WORD_BITS)) * weights, axis=-1)


def _nth_bit(words, rank):
    """The position in its word of the `rank`-th (0-based) set bit of each word."""
    position = ops.zeros_like(rank)
    half = WORD_BITS // 2
    while half:
        below = _popcount(ops.bitwise_and(words, (1 << half) - 1))
        upper = rank >= below
        rank = ops.where(upper, rank - below, rank)
        words = ops.where(upper, ops.right_shift(words, half), words)
        position = ops.where(upper, position + half, position)
        half //= 2
    return position


def support_indices(scores, cap, bias=None):
    """The latents with a positive score (of `scores + bias`), in `cap` slots per row.

    A row's slots hold its support in increasing latent order, then (when
    the support has fewer than `cap` latents) latents outside it, also in
    increasing order, so that the `cap` latents of a row are distinct.
    Found without a sort or a top-k (which XLA:CPU runs in 40 ms at 1024 x
    4096 and `cap` 112, where this takes about 4): the support is packed
    into 16-bit words, counting the words' running bit counts below each
    slot's rank (per group of 16 words, then within the group) finds the
    word of each slot, and a search over halves of that word its bit.

    Args:
        scores: `(rows, latent_dim)`; a latent belongs to a row's support
            where its score is > 0.
        cap: int, `0 <= cap <= latent_dim`, the slots per row (0: only
            count, every row with a support overflows).
        bias: optional `(latent_dim,)` added to every row of `scores`
            first (the Numba loop adds it on the fly, see `host`).

    Returns:
        `(indices, counts, overflow)`: `indices` `(rows, cap)` int32 holds
        every latent of the support of a row whose support has at most `cap`
        latents (the other slots hold latents with scores <= 0), and the
        first `cap` latents of a larger support; `counts` `(rows,)` int32 is
        the size of each support; `overflow` is a bool scalar, true when some
        row's support exceeds `cap` (then its slots miss some of it).

    Example:

    >>> import numpy as np
    >>> indices, counts, overflow = support_indices(
    ...     np.array([[0.5, -1.0, 2.0, 0.0]], "float32"), cap=3)
    >>> np.asarray(indices).tolist(), np.asarray(counts).tolist(), bool(overflow)
    ([[0, 2, 1]], [2], False)
    """
    scores = ops.convert_to_tensor(scores)
    if host.active(scores.dtype) and (bias is None or host.active(bias.dtype)):
        indices, counts = host.support_indices(scores, cap, bias)
        return indices, counts, ops.any(counts > cap)
    if bias is not None:
        scores = scores + bias
    active = scores > 0
    rows = ops.shape(active)[0]
    words = _packed(active)
    num_words = words.shape[-1]
    through = ops.cumsum(_popcount(words), axis=1)  # set bits in words 0..w
    counts = through[:, -1]
    if cap == 0:
        return ops.zeros((rows, 0), "int32"), counts, ops.any(counts > cap)
    # Slot s (1-based) takes the s-th set bit, or, past the support, the
    # (s - count)-th clear bit (the clear bits past `latent_dim` come last).
    slot = ops.expand_dims(ops.arange(1, cap + 1, dtype="int32"), 0)
    padding = slot > ops.expand_dims(counts, 1)
    wanted = ops.where(padding, slot - ops.expand_dims(counts, 1), slot)
    # The word of each slot, in two steps of counting: the group of
    # `GROUP_WORDS` words, from the groups' running counts, then the word
    # in it, from its words' running counts (both compares, no search).
    group_words = min(GROUP_WORDS, num_words)
    groups = -(-num_words // group_words)
    clear_through = WORD_BITS * ops.arange(1, num_words + 1, dtype="int32") - through
    if groups * group_words != num_words:   # padding words, never reached
        extra = ((0, 0), (0, groups * group_words - num_words))
        through = ops.pad(through, extra, constant_values=1 << 30)
        clear_through = ops.pad(clear_through, extra, constant_values=1 << 30)

    def running(set_bits, clear_bits):   # (rows, n) each -> (rows, cap, n)
        return ops.where(ops.expand_dims(padding, -1), ops.expand_dims(clear_bits, 1),
                         ops.expand_dims(set_bits, 1))

    def count_below(running_counts):
        return ops.sum(ops.cast(running_counts < ops.expand_dims(wanted, -1), "int32"),
                       axis=-1)

    last = group_words - 1
    group = ops.minimum(count_below(running(through[:, last::group_words],
                                            clear_through[:, last::group_words])),
                        groups - 1)

    def in_group(counts_through):   # (rows, cap, group_words): the group's counts
        grid = ops.reshape(counts_through, (rows, groups, group_words))
        return ops.take_along_axis(grid, ops.expand_dims(group, -1), axis=1)

    fine = ops.where(ops.expand_dims(padding, -1), in_group(clear_through),
                     in_group(through))
    within = ops.minimum(count_below(fine), group_words - 1)
    low = group * group_words + within
    word = ops.take_along_axis(words, low, axis=1)
    word = ops.where(padding, (1 << WORD_BITS) - 1 - word, word)
    before = ops.take_along_axis(fine, ops.expand_dims(within, -1), axis=2)[:, :, 0] - (
        _popcount(word))
    position = _nth_bit(word, wanted - 1 - before)
    return low * WORD_BITS + position, counts, ops.any(counts > cap)
