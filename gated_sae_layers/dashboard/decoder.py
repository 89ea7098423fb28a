"""What a dashboard shows of the decoder: neighbours, output features, per-layer norms.

The decoder `W_dec` (`(latent_dim, output_dim)`) writes in the output space:
the input space for an SAE, the target's space `y` for a transcoder
(`output_dim` may differ from `input_dim`), the layers side by side for a
crosscoder. Nothing here reads `input_dim`.

* `nearest_latents`: per latent, the others of largest decoder cosine;
* `top_outputs`: per latent, the output features its decoder row writes
  most (largest `|W_dec[i, j]|`), shown for transcoders;
* `model_type` and `layer_norms`: a crosscoder's per-layer decoder norms
  (`crosscoder_decoder_norms`), shown per latent.
"""

import numpy as np
from keras import ops

from gated_sae_layers.models.builders.crosscoder import crosscoder_decoder_norms

NEIGHBORS = 6                     # nearest latents by decoder cosine
TOP_OUTPUTS = 8                   # output features listed on a transcoder's page


def model_type(model):
    """`"crosscoder"` (its architecture record says so), `"transcoder"`
    (`model.is_transcoder`) or `"sae"`."""
    record = getattr(model, "architecture", None) or {}
    if record.get("name") == "crosscoder":
        return "crosscoder"
    return "transcoder" if getattr(model, "is_transcoder", False) else "sae"


def decoder_rows(model):
    """`W_dec` as float64 numpy, `(latent_dim, output_dim)`."""
    return np.asarray(ops.convert_to_numpy(model.decoder.kernel), "float64")


def nearest_latents(decoder, latents, count=NEIGHBORS):
    """For each latent, the `count` others of largest decoder cosine, with it."""
    unit = decoder / np.maximum(np.linalg.norm(decoder, axis=1, keepdims=True), 1e-12)
    cosine = unit[latents] @ unit.T
    cosine[np.arange(len(latents)), latents] = -np.inf
    count = min(count, decoder.shape[0] - 1)
    result = []
    for i in range(len(latents)):
        best = np.argsort(-cosine[i], kind="stable")[:count]
        result.append([[int(j), float(f"{cosine[i, j]:.3f}")] for j in best])
    return result


def top_outputs(decoder_row, count=TOP_OUTPUTS):
    """`[[feature, weight], ...]`: the `count` output features of largest
    `|weight|` in one decoder row (ties: the lower feature), weights to 4
    significant digits.

    Example:

    >>> top_outputs(np.array([0.1, -0.9, 0.5]), count=2)
    [[1, -0.9], [2, 0.5]]
    """
    decoder_row = np.asarray(decoder_row, "float64")
    order = np.lexsort((np.arange(len(decoder_row)), -np.abs(decoder_row)))[:count]
    return [[int(j), float(f"{decoder_row[j]:.4g}")] for j in order]


def layer_norms(model):
    """A crosscoder's `||W_dec^l_i||` as `latent_dim` lists of `num_layers`
    floats (4 significant digits: what the page prints)."""
    norms = np.asarray(crosscoder_decoder_norms(model), "float64").T
    return [[float(f"{v:.4g}") for v in row] for row in norms.tolist()]
