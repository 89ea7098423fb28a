"""A trained SAE on in-memory rows: batched `encode`/`decode`, and `b_dec` from data.

The bodies of `SparseAutoencoder.encode`, `.decode` and
`.initialize_decoder_bias`. Rows are checked by the rule of `fit` (NaN/Inf
rows raise) and processed `batch_size` at a time on the host side of the
model; symbolic tensors pass straight through the layers.
"""

import keras
import numpy as np
from keras import ops

from gated_sae_layers._keras_compat import output_structure
from gated_sae_layers._validation import (
    check_activations,
    check_positive_int,
    is_data_frame,
    is_in_memory,
)
from gated_sae_layers.activations.rows import example_batches
from gated_sae_layers.models import input_rule


def _in_batches(function, rows, batch_size, name):
    """`function` applied to `rows` `batch_size` at a time, as one numpy array."""
    return np.concatenate([
        np.asarray(ops.convert_to_numpy(function(batch)))
        for batch in example_batches(rows, batch_size, name)])


def latents_model(model):
    """A Functional model from `model`'s input to its `latents` output.

    Cached in `model.caches` (`ModelCaches`, untracked): it shares the
    model's layers and weights, and computes no decoder.
    """
    cached = model.caches.latents_model
    if cached is None:
        outputs = output_structure(model)
        if "latents" not in outputs:
            raise ValueError(
                f"Model '{model.name}' has no `latents` output to encode "
                f"with. Its outputs: {sorted(outputs)}")
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        cached = keras.Model(inputs, outputs["latents"])
        model.caches.latents_model = cached
    return cached


def encode_rows(model, x, batch_size):
    """`model.encode(x, batch_size)`: `(num_rows, latent_dim)` latents."""
    encoder = latents_model(model)
    if not (is_in_memory(x) or is_data_frame(x) or isinstance(x, dict)):
        return encoder(x)
    batch_size = check_positive_int(batch_size, "batch_size")
    x = input_rule.check_model_data(model, x, "x")
    return _in_batches(encoder, x, batch_size, "x")


def decode_rows(model, latents, batch_size):
    """`model.decode(latents, batch_size)`: `(num_rows, input_dim)`."""
    if not is_in_memory(latents):
        return model.decoder(latents)
    batch_size = check_positive_int(batch_size, "batch_size")
    latents = check_activations(latents, model.latent_dim, "latents")
    return _in_batches(model.decoder, latents, batch_size, "latents")


def initialize_decoder_bias(model, data, method, sample_rows, seed):
    """`model.initialize_decoder_bias(...)`: `b_dec` at the center of `data`."""
    from gated_sae_layers.activations.normalization import estimate_center

    # `b_dec` lives in the output space: a transcoder centers on its targets.
    if hasattr(data, "read_shard"):
        input_rule.check_model_data(model, data, "data", targets=True)
    else:
        data = check_activations(data, model.output_dim, "data")
    center = estimate_center(data, method, sample_rows, seed)
    model.decoder.bias.assign(center)
    return center
