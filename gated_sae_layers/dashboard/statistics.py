"""What a feature dashboard shows, gathered in one streaming pass over latents.

`LatentStatistics.update(latents, first_row)` takes one `(batch, latent_dim)`
batch of latents at a time, rows in order, and keeps per latent (`L`
latents; `K = top_k`, `R = sample_size`, `B = 130` histogram bins):

```
fire_count[i] = #{n : f_i(x_n) > 0}
total[i]      = sum_n f_i(x_n)                         (float64)
histogram[i]  = counts of log10 f_i(x_n) over fixed bins, for f_i(x_n) > 0
top[i]        = the K rows of largest f_i(x_n) > 0     (ties: the lower row)
sample[i]     = the R rows where f_i fires of smallest key(n, i), a uniform
                sample without replacement (`buffers.uniform_keys`)
l0_histogram  = counts of #{i : f_i(x_n) > 0} over rows
```

Memory is `O(L * (K + R + B))` whatever the number of rows: nothing grows
with the data. The histogram bins are log-spaced, `BINS_PER_DECADE` per
decade from `10**LOG10_LOW` to `10**LOG10_HIGH`, with one more bin below
and one above (`histogram_edges()`).
"""

import numpy as np

from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.dashboard.buffers import BoundedTop, uniform_keys

LOG10_LOW, LOG10_HIGH, BINS_PER_DECADE = -4, 4, 16
NUM_BINS = (LOG10_HIGH - LOG10_LOW) * BINS_PER_DECADE + 2


def histogram_edges():
    """The `NUM_BINS + 1` activation edges: `0, 10**-4, ..., 10**4, inf`.

    Bin `b` holds `edges[b] <= f < edges[b + 1]` (in log10 space: the bin of
    `v` is `floor((log10 v - LOG10_LOW) * BINS_PER_DECADE) + 1`, clipped).

    >>> edges = histogram_edges()
    >>> len(edges), float(edges[1]), float(edges[-2])
    (131, 0.0001, 10000.0)
    """
    inner = 10.0 ** np.linspace(LOG10_LOW, LOG10_HIGH, NUM_BINS - 1)
    return np.concatenate([[0.0], inner, [np.inf]])


def histogram_bins(values):
    """The histogram bin of each positive activation (see `histogram_edges`)."""
    position = np.floor((np.log10(values) - LOG10_LOW) * BINS_PER_DECADE)
    return (np.clip(position, -1, NUM_BINS - 2) + 1).astype("int64")


class LatentStatistics:
    """Streaming per-latent statistics of SAE latents (module docstring).

    Args:
        latent_dim: int, the number of latents `L`.
        top_k: int, the top-activating rows kept per latent.
        sample_size: int, the rows kept per latent in its uniform sample
            (the source of the examples from lower quantiles).
        seed: int, the seed of the sample's keys.

    Example:

    >>> stats = LatentStatistics(latent_dim=3, top_k=2, sample_size=4)
    >>> stats.update(np.array([[0.0, 1.0, 2.0], [0.0, 3.0, 0.0]], "float32"), first_row=0)
    >>> stats.num_rows, stats.fire_count.tolist(), stats.top.row[1].tolist()
    (2, [0, 2, 1], [1, 0])
    """

    def __init__(self, latent_dim, top_k=20, sample_size=128, seed=0):
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.top = BoundedTop(latent_dim, check_positive_int(top_k, "top_k"))
        self.sample = BoundedTop(latent_dim, check_positive_int(sample_size, "sample_size"))
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"`seed` must be an integer. Received: seed={seed!r}")
        self.seed = int(seed)
        self.num_rows = 0
        self.fire_count = np.zeros(latent_dim, "int64")
        self.total = np.zeros(latent_dim, "float64")
        self.histogram = np.zeros((latent_dim, NUM_BINS), "int64")
        self.l0_histogram = np.zeros(latent_dim + 1, "int64")

    def update(self, latents, first_row):
        """Adds a `(batch, latent_dim)` batch whose first row is row `first_row`."""
        latents = np.asarray(latents)
        if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(
                f"`latents` must have shape (batch, {self.latent_dim}). "
                f"Received: latents.shape={latents.shape}")
        if first_row != self.num_rows:
            raise ValueError(
                f"Rows must arrive in order: the next batch starts at row "
                f"{self.num_rows}. Received: first_row={first_row}")
        rows, latent = np.nonzero(latents > 0)
        value = latents[rows, latent].astype("float32")
        rows = rows + first_row
        self.num_rows += len(latents)
        self.fire_count += np.bincount(latent, minlength=self.latent_dim)
        self.total += np.bincount(latent, weights=value, minlength=self.latent_dim)
        self.l0_histogram += np.bincount(
            np.bincount(rows - first_row, minlength=len(latents)),
            minlength=self.latent_dim + 1)
        self.histogram += np.bincount(
            latent * NUM_BINS + histogram_bins(value),
            minlength=self.latent_dim * NUM_BINS).reshape(self.latent_dim, NUM_BINS)
        self.top.offer(latent, value.astype("float64"), value, rows)
        keys = uniform_keys(rows, latent, self.latent_dim, self.seed)
        self.sample.offer(latent, -keys, value, rows)

    # ------------------------------------------------------------ results
    @property
    def frequency(self):
        """`(L,)` the fraction of rows on which each latent fires."""
        return self.fire_count / max(self.num_rows, 1)

    @property
    def mean_activation(self):
        """`(L,)` the mean activation over the rows where the latent fires (0 if none)."""
        return np.divide(self.total, self.fire_count,
                         out=np.zeros(self.latent_dim), where=self.fire_count > 0)

    @property
    def max_activation(self):
        """`(L,)` the largest activation (0 for a latent that never fired)."""
        return np.maximum(self.top.value[:, 0], 0.0) * (self.top.row[:, 0] >= 0)

    def top_examples(self, latent):
        """`(rows, values)` of the latent's top rows, largest first."""
        kept = self.top.row[latent] >= 0
        return self.top.row[latent][kept], self.top.value[latent][kept]

    def quantile_samples(self, latent, groups=4, per_group=4):
        """Examples from each quantile range of the latent's activations.

        The sample (`R` uniform rows where the latent fired) is sorted by
        activation; group `g` (of `groups`, lowest first) holds the sample's
        entries of rank in `[floor(g m / G), floor((g + 1) m / G))`, `m` the
        sample's size: its `g`-th quantile range. From each group the
        `per_group` entries of smallest key are taken (a uniform choice).
        Where the latent fired on at most `R` rows the sample holds them
        all, and the groups are the exact quantile ranges.

        Returns:
            A list of `groups` `(rows, values)` pairs, values descending.
        """
        groups = check_positive_int(groups, "groups")
        per_group = check_positive_int(per_group, "per_group")
        kept = self.sample.row[latent] >= 0  # sorted by key: a random order
        rows, values = self.sample.row[latent][kept], self.sample.value[latent][kept]
        by_value = np.lexsort((rows, values))  # rank in the sample
        count = len(rows)
        result = []
        for group in range(groups):
            members = by_value[count * group // groups:count * (group + 1) // groups]
            chosen = np.sort(members)[:per_group]  # smallest keys
            chosen = chosen[np.lexsort((rows[chosen], -values[chosen]))]
            result.append((rows[chosen], values[chosen]))
        return result
