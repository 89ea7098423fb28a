"""Rows of activations, checked and streamed batch by batch through an SAE."""

import numpy as np
from keras import ops

from gated_sae_layers._validation import check_activations, check_positive_int
from gated_sae_layers.activations.store import ActivationStore


def check_rows(model, x, name="x"):
    """`x` checked against `model.input_dim`; returns `(x, num_rows)`.

    `x` is a 2-D float array-like (numpy, a memory map, an eager tensor) or
    an `ActivationStore` (whose rows are finite by construction).
    """
    if isinstance(x, ActivationStore):
        return x.check_rows_for(model.input_dim, name), x.num_rows
    x = check_activations(x, model.input_dim, name)
    return x, int(x.shape[0])


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


def row_batches(x, batch_size):
    """Yields float32 `(batch, input_dim)` numpy batches of `x` in order."""
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(x, ActivationStore):
        for index in range(x.num_shards):
            shard = x.read_shard(index)
            for start in range(0, len(shard), batch_size):
                yield np.asarray(shard[start:start + batch_size], "float32")
        return
    for start in range(0, int(x.shape[0]), batch_size):
        yield np.asarray(x[start:start + batch_size], "float32")


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
