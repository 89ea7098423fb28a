"""Activation normalization as SAELens does it, folded into the SAE on export.

SAEs train better on activations scaled to a fixed norm: SAELens scales
them so the mean squared norm equals `input_dim`. The scale is estimated
once from a sample. Training then happens on `scale * x`; for use on raw
activations the scale is folded into the weights, so the exported SAE
gives `x_hat_raw = sae(scale * x) / scale` with no extra layer.
"""

import numpy as np
from keras import ops

from gated_sae_layers._validation import check_activations, check_positive_int


def estimate_norm_scale(data, sample_rows=65536, seed=0):
    """`sqrt(input_dim / E||x||^2)` over a sample of `data` (array or `ActivationStore`).

    Raises:
        ValueError: no rows, NaN or Inf in the sample, or no finite positive
            scale (all-zero or vanishingly small activations).
    """
    sample_rows = check_positive_int(sample_rows, "sample_rows")
    if hasattr(data, "read_shard"):
        sample = _store_sample(data, sample_rows, seed)
    else:
        sample = np.asarray(check_activations(data, None, "data"), "float64")
    if len(sample) > sample_rows:
        sample = sample[np.random.default_rng(seed).choice(len(sample), sample_rows,
                                                            replace=False)]
    mean_squared_norm = float((sample ** 2).sum(axis=1).mean())
    if mean_squared_norm == 0:
        raise ValueError("The activations are all zero; no scale normalizes them.")
    with np.errstate(divide="ignore", over="ignore"):
        scale = float(np.sqrt(sample.shape[1] / mean_squared_norm))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"The activations' mean squared norm is {mean_squared_norm:g}: no finite "
            f"scale > 0 normalizes them. Received: scale={scale}")
    return scale


def _store_sample(store, sample_rows, seed):
    """At least `sample_rows` rows (or all) of whole shards in random order."""
    if not store.num_rows:
        raise ValueError(
            f"`data` has no rows: the store at {store.path} is empty. Harvest into "
            "it first.")
    order = np.random.default_rng(seed).permutation(store.num_shards)
    parts, taken = [], 0
    for index in order:
        parts.append(np.asarray(store.read_shard(int(index)), "float64"))
        taken += len(parts[-1])
        if taken >= sample_rows:
            break
    sample = np.concatenate(parts)
    if not np.isfinite(sample).all():
        raise ValueError(
            f"The store at {store.path} holds NaN or Inf (in a float16 store, values "
            "beyond 65504 written before this was checked): no scale normalizes them. "
            'Re-harvest with dtype="float32", or normalize the activations first.')
    return sample


def fold_normalization(model, scale=None):
    """A copy of `model` (trained on `scale * x`) that works on raw `x`.

    With `x_c = scale * x - b_dec = scale * (x - b_dec / scale)`, the
    encoder's input kernel is multiplied by `scale` and `b_dec` divided by
    it, so every pre-activation and latent is unchanged; the decoder's
    kernel and bias are divided by `scale`, so the reconstruction comes out
    in raw units. Decoder rows then have norm `1 / scale`: the copy's
    decoder has no unit-norm constraint (it is for inference on raw data;
    keep training the normalized model). A folded `GatedSAE` gets the
    constraint back when saved and reloaded (its config has no decoder
    settings), which changes nothing until an optimizer step.

    Args:
        model: a `SparseAutoencoder` whose encoder has an input kernel
            (`gate_kernel` or `kernel`).
        scale: float > 0, from `estimate_norm_scale`; default the model's
            own `normalization_scale`.

    Returns:
        A new model with the same config and folded weights, and
        `normalization_scale=None` (it takes raw activations).
    """
    if scale is None:
        scale = getattr(model, "normalization_scale", None)
        if scale is None:
            raise ValueError(
                "`scale` is None and the model has no `normalization_scale`: pass "
                "the scale from `estimate_norm_scale`.")
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"`scale` must be a finite number > 0. Received: scale={scale}")
    config = model.get_config()
    if "normalization_scale" in config:
        config["normalization_scale"] = None
    for layer_config in config.get("layers", []):
        if layer_config["class_name"] == "UnitNormDecoder":
            layer_config["config"]["kernel_constraint"] = None
    folded = model.__class__.from_config(config)
    folded.set_weights(model.get_weights())
    encoder, decoder = folded.encoder, folded.decoder
    # Also for models whose config does not list the decoder (`GatedSAE`):
    # the optimizer reads the constraint off the variable.
    decoder.kernel_constraint = None
    decoder.kernel.constraint = None
    kernel = getattr(encoder, "gate_kernel", None)
    if kernel is None:
        kernel = getattr(encoder, "kernel", None)
    if kernel is None:
        raise ValueError(
            f"Cannot fold a scale into an encoder of type {type(encoder).__name__}: "
            "it has no `gate_kernel` or `kernel`.")
    kernel.assign(ops.convert_to_numpy(kernel) * scale)
    decoder.kernel.assign(ops.convert_to_numpy(decoder.kernel) / scale)
    decoder.bias.assign(ops.convert_to_numpy(decoder.bias) / scale)
    return folded


__all__ = ["estimate_norm_scale", "fold_normalization"]
