"""Rows of activations: checked, batched, flattened, and summed through an SAE.

The one home of what every pass over activations does (`fit`'s input rule,
`encode`, evaluation, dashboards, harvest, splice):

| name              | what it does                                                  |
|-------------------|---------------------------------------------------------------|
| `check_rows`      | an array or an `ActivationStore` checked against a width      |
| `num_examples`    | the examples of a model's inputs (array or structure), > 0    |
| `example_batches` | a model's inputs `batch_size` examples at a time, as given    |
| `row_batches`     | float32 numpy batches of the rows of an array or a store      |
| `flatten_rows`    | `(..., width)` values as 2-D `(rows, width)`                  |
| `sae_outputs`     | an SAE's latents and reconstruction of one batch, as numpy    |
| `check_finite_weights` | refuses an SAE whose weights hold NaN or Inf             |
| `FidelitySums`    | streaming float64 sums: L0, FVU, shrinkage, cosine, density   |

Errors follow the Keras style of `gated_sae_layers._validation`.
"""

import keras
import numpy as np
from keras import ops

from gated_sae_layers._validation import check_activations, check_positive_int
from gated_sae_layers.activations.store import ActivationStore


def check_rows(x, input_dim, name="x", check_finite=True):
    """`x` checked against the width `input_dim`; returns `(x, num_rows)`.

    `x` is a 2-D float array-like (numpy, a memory map, an eager tensor, a
    pandas frame, returned as numpy) checked by `check_activations` (rank,
    width, at least one row, a floating dtype and, unless
    `check_finite=False`, no NaN/Inf), or an `ActivationStore` of rows of
    width `input_dim` with at least one row (its rows are finite by
    construction).

    Example:

    >>> import numpy as np
    >>> x, num_rows = check_rows(np.zeros((3, 4), "float32"), 4)
    >>> num_rows
    3
    >>> check_rows(np.zeros((3, 5), "float32"), 4)
    Traceback (most recent call last):
    ...
    ValueError: `x` must have 4 features (last axis) to match the model's input_dim. Received: x.shape=(3, 5)
    """
    if isinstance(x, ActivationStore):
        if x.input_dim != input_dim or x.num_rows == 0:
            raise ValueError(
                f"`{name}` must be an ActivationStore of rows of width {input_dim} "
                f"(the model's input_dim) with at least one row. Received: a store "
                f"of {x.num_rows} rows of width {x.input_dim}")
        return x, x.num_rows
    x = check_activations(x, input_dim, name, check_finite=check_finite)
    return x, int(x.shape[0])


def num_examples(inputs, name="inputs"):
    """The number of examples (the first axis of the first array) of `inputs`,
    an array or a structure (dict, tuple, list) of arrays; raises a
    `ValueError` where there are none."""
    leaves = keras.tree.flatten(inputs)
    if not leaves or len(leaves[0]) == 0:
        raise ValueError(f"`{name}` is empty: expected at least one example.")
    return len(leaves[0])


def example_batches(inputs, batch_size, name="inputs"):
    """Yields `inputs` (an array or a structure of arrays) `batch_size`
    examples at a time, in order, each array sliced along its first axis
    and otherwise as given (dtype and type kept).

    Example:

    >>> import numpy as np
    >>> inputs = {"token_ids": np.arange(10).reshape(5, 2)}
    >>> [len(batch["token_ids"]) for batch in example_batches(inputs, 2)]
    [2, 2, 1]
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    for start in range(0, num_examples(inputs, name), batch_size):
        yield keras.tree.map_structure(lambda a: a[start:start + batch_size], inputs)


def row_batches(x, batch_size):
    """Yields float32 `(batch, input_dim)` numpy batches of `x` in order.

    `x` is a 2-D array (checked by `check_rows`) or an `ActivationStore`,
    read one shard at a time (a batch never spans two shards).

    Example:

    >>> import numpy as np
    >>> [batch.shape for batch in row_batches(np.zeros((5, 3)), 2)]
    [(2, 3), (2, 3), (1, 3)]
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(x, ActivationStore):
        for index in range(x.num_shards):
            shard = x.read_shard(index)
            for start in range(0, len(shard), batch_size):
                yield np.asarray(shard[start:start + batch_size], "float32")
        return
    for start in range(0, int(x.shape[0]), batch_size):
        yield np.asarray(x[start:start + batch_size], "float32")


def flatten_rows(values, per_example=False):
    """`values` as a 2-D `(rows, width)` array; a scalar is one row of one value.

    By default every axis but the last folds into the rows (one row per
    position: `(batch, tokens, width)` becomes `(batch * tokens, width)`).
    With `per_example=True` every axis but the first folds into the width
    (one row per example: `(batch, tokens, width)` becomes
    `(batch, tokens * width)`). A backend tensor stays a tensor (reshaped by
    `keras.ops`, symbolic ones included); anything else becomes numpy.

    Example:

    >>> import numpy as np
    >>> flatten_rows(np.zeros((2, 3, 4))).shape
    (6, 4)
    >>> flatten_rows(np.zeros((2, 3, 4)), per_example=True).shape
    (2, 12)
    """
    if hasattr(values, "shape") and not isinstance(values, (np.ndarray, np.generic)):
        if len(values.shape) == 0:
            return ops.reshape(values, (1, 1))
        if per_example:
            return ops.reshape(values, (ops.shape(values)[0], -1))
        return ops.reshape(values, (-1, ops.shape(values)[-1]))
    values = np.asarray(values)
    if not values.ndim:
        return values.reshape(1, 1)
    if per_example:
        return values.reshape(len(values), -1)
    return values.reshape(-1, values.shape[-1])


def sae_outputs(model, batch, latents_dtype="float64"):
    """`(latents, reconstruction)` of one batch, as numpy arrays (the
    reconstruction float64, the latents `latents_dtype`)."""
    # An eager call: `predict_on_batch` would trace a function per batch shape.
    outputs = model(batch, training=False)
    if not isinstance(outputs, dict) or not {"latents", "reconstruction"} <= set(outputs):
        keys = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise ValueError(
            "An SAE with `latents` and `reconstruction` outputs is needed "
            f"(any `SparseAutoencoder`). Received: outputs {keys}")
    return (np.asarray(ops.convert_to_numpy(outputs["latents"]), latents_dtype),
            np.asarray(ops.convert_to_numpy(outputs["reconstruction"]), "float64"))


def check_finite_weights(model, purpose):
    """Raises a `ValueError` naming the first weight of `model` that holds NaN
    or Inf (every latent and reconstruction would be NaN: `purpose` says what
    that breaks)."""
    for variable in model.weights:
        values = np.asarray(ops.convert_to_numpy(variable))
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise ValueError(
                f"The SAE's weight `{variable.path}` holds NaN or Inf ({bad} of "
                f"{values.size} values): {purpose}. Check how it was trained or "
                "loaded (`fit` stops at the first non-finite step and keeps the "
                f"weights from before it). Received: model '{model.name}'")


class FidelitySums:
    """Running float64 sums over batches of rows through an SAE.

    The results are exact for all rows seen (not a mean of batch means).
    With `f` the latents and `x_hat` the reconstruction of each row `x`
    (`N` rows, `mean(x)` per feature over all rows):

    ```
    l0                = (1/N) sum_n #{i : f_i(x_n) > 0}
    fvu               = sum_n ||x_n - x_hat_n||^2 / sum_n ||x_n - mean(x)||^2   (NaN if 0/0)
    shrinkage         = sum_n ||x_hat_n||^2 / sum_n x_hat_n . x_n             (0 if that is 0)
    cosine_similarity = (1/N) sum_n x_n . x_hat_n / (max(||x_n||, 1e-8) max(||x_hat_n||, 1e-8))
    feature_density_i = (1/N) #{n : f_i(x_n) > 0}
    ```

    The variance is summed around the first batch's mean (a fixed shift
    keeps the sums small), so it needs one pass only.

    Args:
        input_dim: int, the width of the rows.
        latent_dim: int, the number of latents.

    Example:

    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> sums = FidelitySums(2, 3)
    >>> sums.update(x, np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), x * 0.5)
    >>> sums.l0(), sums.fvu(), sums.shrinkage(), sums.feature_density().tolist()
    (1.0, 0.5, 0.5, [0.5, 0.5, 0.0])
    """

    def __init__(self, input_dim, latent_dim):
        self.rows = 0
        self.active = 0.0
        self.fire_counts = np.zeros(latent_dim, "int64")
        self.shift = None  # the first batch's mean: keeps the variance sums small
        self.deviation = np.zeros(input_dim)
        self.square_deviation = np.zeros(input_dim)
        self.residual = self.reconstruction_square = self.cross = self.cosine = 0.0

    def update(self, x, latents, x_hat):
        """Adds a batch: rows `x`, their `latents` and reconstruction `x_hat`
        (numpy arrays; `x_hat` is used as given, float64 for exact sums)."""
        x = x.astype("float64")
        if self.shift is None:
            self.shift = x.mean(axis=0)
        active = latents > 0
        self.rows += len(x)
        self.active += float(active.sum())
        self.fire_counts += active.sum(axis=0)
        deviation = x - self.shift
        self.deviation += deviation.sum(axis=0)
        self.square_deviation += (deviation ** 2).sum(axis=0)
        self.residual += float(((x - x_hat) ** 2).sum())
        self.reconstruction_square += float((x_hat ** 2).sum())
        self.cross += float((x_hat * x).sum())
        norms = np.maximum(np.linalg.norm(x, axis=1), 1e-8) * np.maximum(
            np.linalg.norm(x_hat, axis=1), 1e-8)
        self.cosine += float(((x * x_hat).sum(axis=1) / norms).sum())

    def total_variance(self):
        """`sum_n ||x_n - mean(x)||^2` over the rows seen."""
        return float((self.square_deviation - self.deviation ** 2 / self.rows).sum())

    def l0(self):
        """The mean number of active latents per row."""
        return self.active / self.rows

    def fvu(self):
        """The fraction of variance unexplained; NaN where the rows have no
        variance (one row, or identical rows)."""
        variance = self.total_variance()
        return self.residual / variance if variance > 0 else float("nan")

    def shrinkage(self):
        """The relative reconstruction bias `gamma` (1 is unbiased); 0 where
        `sum x_hat . x` is 0."""
        return self.reconstruction_square / self.cross if self.cross else 0.0

    def cosine_similarity(self):
        """The mean cosine between each row and its reconstruction."""
        return self.cosine / self.rows

    def feature_density(self):
        """`(latent_dim,)` float64: the fraction of rows on which each latent fires."""
        return self.fire_counts / self.rows
