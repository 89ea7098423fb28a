"""`fold_normalization`: a model trained on scaled activations, made to take raw ones.

SAEs train better on activations scaled to a fixed mean squared norm
(`activations.estimate_norm_scale`, `SparseAutoencoder.normalization_scale`);
this folds the scale into a copy of the model's weights for inference on the
raw activations, with no extra layer.
"""

import numpy as np
from keras import ops

from gated_sae_layers.layers.decoder_norm_weighting import attach_decoder


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
        model: a `SparseAutoencoder` (any encoder: the scale goes into its
            `input_kernel`).
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
    folded = model.__class__.from_config(config)
    folded.set_weights(model.get_weights())
    encoder, decoder = folded.encoder, folded.decoder
    attach_decoder(folded, decoder)
    # Dropped on the layer, so also for models whose config does not list
    # the decoder (`GatedSAE`); the optimizer reads it off the variable.
    decoder.kernel_constraint = None
    decoder.kernel.constraint = None
    kernel = encoder.input_kernel
    kernel.assign(ops.convert_to_numpy(kernel) * scale)
    decoder.kernel.assign(ops.convert_to_numpy(decoder.kernel) / scale)
    decoder.bias.assign(ops.convert_to_numpy(decoder.bias) / scale)
    return folded
