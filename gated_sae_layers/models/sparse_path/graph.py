"""A `SparseAutoencoder`'s own graph, run on slots instead of dense latents.

The sparse training step runs the model's Functional graph node by node,
as `Functional.call` does, with three differences: the decoder's centering
hands on a `Centered` (`x` and `b_dec` apart, for a cheaper `b_dec`
gradient), the encoder runs its `sparse_call` on the batch's `Selection`,
and every layer that receives a `SparseLatents` runs its `sparse_call` (a
plain `ReLU` maps the slot values). Layers that see only dense tensors run as usual. So any model
assembled from the kit's layers trains on the sparse path, hand-assembled
ones included, as long as `check_graph` accepts it.
"""

import inspect

import keras

from gated_sae_layers import _keras_compat as compat
from gated_sae_layers.layers.auxk_residual import AuxKResidual
from gated_sae_layers.layers.base import SparseEncoder
from gated_sae_layers.layers.decoder_norm_weighting import DecoderNormWeighting
from gated_sae_layers.layers.prefix_mask import PrefixMask
from gated_sae_layers.layers.unit_norm_decoder import UnitNormDecoder
from gated_sae_layers.sparse.kernels import Centered
from gated_sae_layers.sparse.latents import SparseLatents

# Layers that pass sparse latents on (their outputs are latent-width) and
# layers that take them and give dense outputs.
SPARSE_TO_SPARSE = (DecoderNormWeighting, PrefixMask, keras.layers.ReLU)
SPARSE_TO_DENSE = (UnitNormDecoder, AuxKResidual)


def _takes_training(layer):
    return "training" in inspect.signature(layer.call).parameters


def _dense_call(layer, training):
    """The layer as `Functional.call` runs it at a node."""

    def call(*args, **kwargs):
        if training is not None and _takes_training(layer):
            kwargs.setdefault("training", training)
        return layer(*args, **kwargs)

    return call


def _has_sparse(args, kwargs):
    return any(isinstance(value, SparseLatents)
               for value in keras.tree.flatten((args, kwargs)))


def _materialized(structure):
    """`structure` with every `Centered` replaced by its tensor."""
    return keras.tree.map_structure(
        lambda value: value.materialize() if isinstance(value, Centered) else value,
        structure)


def _is_plain_relu(layer):
    config = layer.get_config()
    return (type(layer) is keras.layers.ReLU and config.get("max_value") is None
            and not config.get("negative_slope") and not config.get("threshold"))


def _sparse_layer_call(layer):
    def call(*args, **kwargs):
        if isinstance(layer, keras.layers.ReLU):
            (inputs,) = args
            return inputs.with_values(keras.ops.relu(inputs.values))
        return compat.in_layer_scope(layer, layer.sparse_call, *args, **kwargs)

    return call


class _EncoderReached(Exception):
    def __init__(self, args):
        super().__init__("encoder reached")
        self.args = args


def encoder_inputs(model, x):
    """The input the model's encoder gets on `x` (the centered `x - b_dec`).

    Runs the graph up to the encoder and stops there.
    """
    encoder = model.encoder

    def operation_fn(layer):
        if layer is encoder:
            def reached(*args, **kwargs):
                raise _EncoderReached(args)
            return reached
        return _dense_call(layer, training=True)

    try:
        compat.run_graph(model, x, operation_fn)
    except _EncoderReached as reached:
        return reached.args[0]
    raise ValueError(f"Model '{model.name}' never calls its encoder on its input.")


def select(model, x, slots):
    """The encoder's `Selection` for the batch `x` (no gradient)."""
    encoder = model.encoder
    return compat.in_layer_scope(encoder, encoder.sparse_selection,
                                 encoder_inputs(model, x), slots)


def with_aux(model, selection):
    """`selection` with the encoder's auxiliary slots (`sparse_aux_selection`)."""
    encoder = model.encoder
    return compat.in_layer_scope(encoder, encoder.sparse_aux_selection, selection)


def sparse_outputs(model, x, selection):
    """The model's outputs on `x` in training, latent-width ones as `SparseLatents`."""
    encoder = model.encoder

    def operation_fn(layer):
        if layer is encoder:
            def encode(inputs, **kwargs):
                return compat.in_layer_scope(layer, layer.sparse_call, inputs,
                                             selection, training=True)
            return encode
        dense = _dense_call(layer, training=True)
        sparse = _sparse_layer_call(layer)

        def call(*args, **kwargs):
            if isinstance(layer, UnitNormDecoder) and kwargs.get("mode") == "center":
                return compat.in_layer_scope(layer, layer.sparse_center, *args)
            args, kwargs = _materialized((args, kwargs))
            if _has_sparse(args, kwargs):
                return sparse(*args, **kwargs)
            return dense(*args, **kwargs)

        return call

    return compat.run_graph(model, x, operation_fn)


def check_graph(model):
    """`None` if the sparse path can run `model`'s graph, else the reason why not.

    Runs the graph symbolically and follows the latent-width tensors from
    the encoder: the encoder must be called once, every layer that receives
    one of them must have a sparse form, and every loss term or metric that
    reads a latent-width output must take `SparseLatents`
    (`supports_sparse_latents`).
    """
    encoders = [layer for layer in compat.sublayers(model)
                if isinstance(layer, SparseEncoder)]
    if len(encoders) != 1:
        return f"it has {len(encoders)} encoder layers (the sparse path needs one)"
    encoder = encoders[0]
    sparse_ids, encoder_calls, refused = set(), [], []

    def operation_fn(layer):
        def call(*args, **kwargs):
            # The output specs only: calling the layer would add nodes to it.
            outputs = layer.compute_output_spec(*args, **kwargs)
            flat = keras.tree.flatten(outputs)
            if layer is encoder:
                encoder_calls.append(layer)
                sparse_ids.update(id(t) for t in flat if t.shape[-1] == encoder.latent_dim)
            elif any(id(t) in sparse_ids for t in keras.tree.flatten((args, kwargs))):
                if isinstance(layer, SPARSE_TO_SPARSE) and (
                        not isinstance(layer, keras.layers.ReLU) or _is_plain_relu(layer)):
                    sparse_ids.update(id(t) for t in flat)
                elif not isinstance(layer, SPARSE_TO_DENSE):
                    refused.append(layer.name)
            return outputs

        return call

    outputs = compat.run_graph(model, model.inputs, operation_fn)
    if len(encoder_calls) != 1:
        return f"its encoder is called {len(encoder_calls)} times (the sparse path needs once)"
    if refused:
        return (f"layers {refused} receive latents and have no sparse form "
                "(a `sparse_call`)")
    terms = [(name, loss) for name, loss in model.loss_terms.items()] + [
        (name, metric) for name, metrics in model.metric_terms.items()
        for metric in metrics]
    unsupported = sorted({term.name for name, term in terms
                          if id(outputs[name]) in sparse_ids
                          and not getattr(term, "supports_sparse_latents", False)})
    if unsupported:
        return (f"the loss terms or metrics {unsupported} read latents and do not "
                "take `SparseLatents` (`supports_sparse_latents`)")
    return None
