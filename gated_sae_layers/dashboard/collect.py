"""The dashboard's passes over the data: one streaming pass, then a small one.

1. `collect_statistics`: every row through the SAE once, batch by batch
   (a Keras progress bar), into a `LatentStatistics` and the fidelity sums
   of `core_metrics` (FVU, shrinkage): against the rows themselves for an
   SAE or a crosscoder (and per layer for a crosscoder), against the
   `targets` `y` for a transcoder.
2. `pair_activations`: `f_i(x_n)` for the few `(row n, latent i)` pairs a
   page shows around its examples (the tokens beside an activating token),
   by encoding only those rows again.
"""

import keras
import numpy as np

from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.activations import rows as activation_rows
from gated_sae_layers.activations.store import ActivationStore
from gated_sae_layers.dashboard.decoder import model_type
from gated_sae_layers.dashboard.statistics import LatentStatistics


class _RowsInOrder:
    """The rows of an array or store handed out in order, `take(count)` at
    a time (float32), whatever the batches they are read in."""

    def __init__(self, data, batch_size):
        self.batches = activation_rows.row_batches(data, batch_size)
        self.pending = []

    def take(self, count):
        held = sum(len(part) for part in self.pending)
        while held < count:
            self.pending.append(next(self.batches))
            held += len(self.pending[-1])
        rows = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending = [rows[count:]]
        return rows[:count]


def collect_statistics(model, x, batch_size=1024, top_k=20, sample_size=128,
                       progress=True, targets=None):
    """One streaming pass of `x` through `model`: latent statistics and fidelity.

    With `x_hat` the reconstruction and `t` what it reconstructs (`t = x`
    for an SAE or a crosscoder, `t = y` the `targets` for a transcoder):

    ```
    l0        = (1/N) sum_n #{i : f_i(x_n) > 0}
    fvu       = sum_n ||t_n - x_hat_n||^2 / sum_n ||t_n - mean(t)||^2
    shrinkage = sum_n ||x_hat_n||^2 / sum_n x_hat_n . t_n
    ```

    (as `core_metrics`). A crosscoder's FVU is also given per layer (the
    columns of each layer, as its `fvu_layer_<l>` metric). Only one batch
    of latents is in memory at a time.

    Args:
        model: a `SparseAutoencoder` (a transcoder or crosscoder too).
        x: `(num_rows, input_dim)` float activations, or an `ActivationStore`
            (already checked by `activations.rows.check_rows`).
        batch_size: int, rows through the model at a time.
        top_k: int, top rows kept per latent.
        sample_size: int, rows of the uniform sample kept per latent.
        progress: bool, show a Keras progress bar.
        targets: `None`, or for a transcoder its `(num_rows, output_dim)`
            targets `y` (array or store, already checked), row `n` that of
            `x`'s row `n`. Without them a transcoder's `fvu` and
            `shrinkage` are NaN (nothing to compare its output with).

    Returns:
        `(statistics, fidelity)`: a `LatentStatistics` and a dict of floats
        `l0`, `fvu` (NaN without variance), `shrinkage`, `num_rows`, and for
        a crosscoder `fvu_layers`, a list of one FVU per layer.

    Example:

    >>> import gated_sae_layers as gsl
    >>> sae = gsl.build_sae("topk", 8, 16, k=2)
    >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype("float32")
    >>> stats, fidelity = collect_statistics(sae, x, batch_size=16, progress=False)
    >>> stats.num_rows, fidelity["l0"]
    (50, 2.0)
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    num_rows = x.num_rows if isinstance(x, ActivationStore) else int(x.shape[0])
    stats = LatentStatistics(model.latent_dim, top_k, sample_size)
    kind = model_type(model)
    compared = kind != "transcoder" or targets is not None
    sums = activation_rows.FidelitySums(model.output_dim, model.latent_dim)
    layers = []
    if kind == "crosscoder":
        num_layers = model.architecture["arguments"]["num_layers"]
        width = model.output_dim // num_layers
        layers = [(slice(l * width, (l + 1) * width),
                   activation_rows.FidelitySums(width, model.latent_dim))
                  for l in range(num_layers)]
    target_rows = _RowsInOrder(targets, batch_size) if targets is not None else None
    bar = keras.utils.Progbar(num_rows, unit_name="row") if progress else None
    for batch in activation_rows.row_batches(x, batch_size):
        latents, reconstruction = activation_rows.sae_outputs(
            model, batch, latents_dtype="float32")
        stats.update(latents, first_row=stats.num_rows)
        if compared:
            target = batch if target_rows is None else target_rows.take(len(batch))
            sums.update(target, latents, reconstruction)
            for columns, layer in layers:
                layer.update(target[:, columns], latents, reconstruction[:, columns])
        if bar is not None:
            bar.add(len(batch))
    fidelity = {
        # (Without a comparison: the same count, from the statistics.)
        "l0": sums.l0() if compared else float(stats.fire_count.sum()) / stats.num_rows,
        "fvu": sums.fvu() if compared else float("nan"),
        "shrinkage": sums.shrinkage() if compared else float("nan"),
        "num_rows": stats.num_rows,
    }
    if layers:
        fidelity["fvu_layers"] = [layer.fvu() for _, layer in layers]
    return stats, fidelity


def read_rows(x, rows):
    """Rows `rows` (sorted, unique ints) of an array or store, as float32."""
    rows = np.asarray(rows, "int64")
    if not isinstance(x, ActivationStore):
        return np.asarray(x[rows], "float32") if len(rows) else np.zeros(
            (0, x.shape[1]), "float32")
    ends = np.cumsum([shard["rows"] for shard in x.manifest["shards"]])
    shard_of = np.searchsorted(ends, rows, side="right")
    parts = []
    for shard in np.unique(shard_of):
        start = ends[shard - 1] if shard else 0
        parts.append(np.asarray(x.read_shard(int(shard))[rows[shard_of == shard] - start],
                                "float32"))
    return np.concatenate(parts) if parts else np.zeros((0, x.input_dim), "float32")


def pair_activations(model, x, rows, latents, batch_size=1024):
    """`f_latents[j](x_rows[j])` for each pair `j`, encoding each row once.

    Args:
        model: a `SparseAutoencoder`.
        x: the array or store of the first pass.
        rows: int array of row indices.
        latents: int array of latent indices, one per row.
        batch_size: int, rows through the model at a time.

    Returns:
        float32 array, one activation per pair.
    """
    rows, latents = np.asarray(rows, "int64"), np.asarray(latents, "int64")
    unique, position = np.unique(rows, return_inverse=True)
    result = np.zeros(len(rows), "float32")
    for start in range(0, len(unique), batch_size):
        batch = read_rows(x, unique[start:start + batch_size])
        latent_batch, _ = activation_rows.sae_outputs(model, batch, latents_dtype="float32")
        inside = (position >= start) & (position < start + len(batch))
        result[inside] = latent_batch[position[inside] - start, latents[inside]]
    return result
