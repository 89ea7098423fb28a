"""Per-latent bounded buffers of the best entries seen so far, merged batch by batch.

A `BoundedTop` keeps, for each of `num_latents` latents, the `size` entries
of largest score offered to it, ties broken by the lower row. Its memory is
`num_latents * size` entries whatever the number of rows streamed through
it. With the activation as the score it keeps the top-k examples; with a
hashed uniform key (`uniform_keys`) as the score it keeps a uniform random
sample without replacement of the rows where the latent fired (bottom-k
sampling: the `size` smallest of i.i.d. uniform keys).
"""

import numpy as np

from gated_sae_layers._validation import check_positive_int

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def uniform_keys(rows, latents, num_latents, seed=0):
    """A uniform key in `[0, 1)` for each `(row, latent)` pair, from a hash.

    ```
    key(row, latent) = splitmix64(row * num_latents + latent + seed * phi) / 2**64
    ```

    (53 bits kept). The key depends only on the pair and `seed`, never on how
    the rows were split into batches, so a sample drawn with these keys is
    the same for every `batch_size`.

    Args:
        rows: int array of global row indices.
        latents: int array of latent indices, the shape of `rows`.
        num_latents: int, the number of latents.
        seed: int, changes every key.

    Returns:
        float64 array of the shape of `rows`.

    Example:

    >>> keys = uniform_keys(np.arange(4), np.zeros(4, int), 8)
    >>> bool(((keys >= 0) & (keys < 1)).all()), len(set(keys.tolist()))
    (True, 4)
    """
    with np.errstate(over="ignore"):
        z = (np.asarray(rows).astype(np.uint64) * np.uint64(num_latents)
             + np.asarray(latents).astype(np.uint64)
             + np.uint64(seed % 2 ** 64) * _GOLDEN + _GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * _MIX_1
        z = (z ^ (z >> np.uint64(27))) * _MIX_2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


class BoundedTop:
    """For each latent, the `size` offered entries of largest score.

    An entry is `(score, value, row)`. The kept entries of latent `i` are
    `score[i]`, `value[i]`, `row[i]`, sorted by score descending then row
    ascending; unused slots hold score `-inf` and row `-1`. Offered entries
    are staged, and merged with the kept ones by one `np.lexsort` over the
    touched latents once the stage holds `num_latents * size / 2` entries
    (or when a result is read): no Python loop over latents, and the cost
    of re-sorting the kept entries is paid once per many batches. Memory
    stays `O(num_latents * size)`.

    Args:
        num_latents: int, the number of latents.
        size: int, the entries kept per latent.
        stage: int, entries staged before a merge (default
            `max(num_latents * size // 2, 4096)`).

    Example:

    >>> top = BoundedTop(num_latents=2, size=2)
    >>> top.offer(latent=np.array([0, 0, 0, 1]), score=np.array([1., 3., 2., 5.]),
    ...           value=np.array([1., 3., 2., 5.]), row=np.array([0, 1, 2, 3]))
    >>> top.row.tolist(), top.count().tolist()
    ([[1, 2], [3, -1]], [2, 1])
    """

    def __init__(self, num_latents, size, stage=None):
        self.num_latents = check_positive_int(num_latents, "num_latents")
        self.size = check_positive_int(size, "size")
        self._score = np.full((num_latents, size), -np.inf)
        self._values = np.zeros((num_latents, size), "float32")
        self._row = np.full((num_latents, size), -1, "int64")
        # The smallest kept score of a full latent (-inf until it is full):
        # an entry at or below it cannot enter, as rows arrive in order.
        self.floor = np.full(num_latents, -np.inf)
        self._staged, self._staged_count = [], 0
        self._stage_limit = (max(num_latents * size // 2, 4096) if stage is None
                             else check_positive_int(stage, "stage"))

    score = property(lambda self: self._merged()._score)
    value = property(lambda self: self._merged()._values)
    row = property(lambda self: self._merged()._row)

    def count(self):
        """`(num_latents,)` the number of entries kept per latent."""
        return (self.row >= 0).sum(axis=1)

    def offer(self, latent, score, value, row):
        """Adds entries (1-D arrays of equal length) to the kept ones.

        Rows must not decrease from one call to the next (a stream): an
        entry whose score only ties the kept minimum then loses to it, as
        the kept one has the lower row.
        """
        enters = score > self.floor[latent]
        if not enters.any():
            return
        self._staged.append(tuple(a[enters] for a in (latent, score, value, row)))
        self._staged_count += int(enters.sum())
        if self._staged_count >= self._stage_limit:
            self._merged()

    def _merged(self):
        """Merges the staged entries into the kept ones; returns self."""
        if not self._staged:
            return self
        latent, score, value, row = (np.concatenate(parts) for parts in zip(*self._staged))
        self._staged, self._staged_count = [], 0
        touched = np.unique(latent)
        size = self.size
        all_latent = np.concatenate([np.repeat(touched, size), latent])
        all_score = np.concatenate([self._score[touched].ravel(), score])
        all_value = np.concatenate([self._values[touched].ravel(), value])
        all_row = np.concatenate([self._row[touched].ravel(), row])
        # Primary key the latent, then score descending, then row ascending
        # (an empty slot, row -1 and score -inf, sorts after every entry).
        order = np.lexsort((np.where(all_row < 0, np.iinfo("int64").max, all_row),
                            -all_score, all_latent))
        sorted_latent = all_latent[order]
        starts = np.searchsorted(sorted_latent, touched)
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.append(starts, len(order))))
        kept = rank < size
        order, sorted_latent, rank = order[kept], sorted_latent[kept], rank[kept]
        self._score[sorted_latent, rank] = all_score[order]
        self._values[sorted_latent, rank] = all_value[order]
        self._row[sorted_latent, rank] = all_row[order]
        self.floor[touched] = self._score[touched, -1]
        return self
