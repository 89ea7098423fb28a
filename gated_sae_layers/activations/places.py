"""Places in a model: its layers found by name, path or object, and their
outputs captured in one run of the model (`harvest` and `spliced` use them)."""

import keras

from gated_sae_layers._keras_compat import sublayers


def find_layer(model, layer):
    """`layer` of `model`: a `Layer` as given, the layer of that name (nested
    layers searched too; the first in order where several share it), or the
    layer at a path `"outer/inner"` (each name searched inside the layer
    before it, as in `Layer.path`: `"transformer_layer_3/feedforward_output_dense"`
    where every block has a `feedforward_output_dense`); raises a
    `ValueError` listing the layers where none matches, a `TypeError` for
    anything else."""
    if isinstance(layer, keras.layers.Layer):
        return layer
    if not isinstance(layer, str):
        raise TypeError(
            f"`layer` must be a layer name or a Layer. Received: layer={layer!r}")
    try:
        return model.get_layer(layer)
    except ValueError:
        pass
    found, parts = model, layer.split("/")
    for depth, part in enumerate(parts):
        inside = sublayers(found)
        matches = [l for l in inside if l.name == part]
        if not matches:
            names = [l.name for l in inside]
            where = (f"Model '{model.name}' has no layer named {layer!r}" if len(parts) == 1
                     else f"Model '{model.name}' has no layer at the path {layer!r}: "
                          f"{'/'.join(parts[:depth]) or repr(model.name)} holds no layer "
                          f"named {part!r}")
            raise ValueError(
                f"{where}. Its layers: {names[:20]}{' ...' if len(names) > 20 else ''}. "
                "Name a nested layer by its path, e.g. 'outer/inner'.")
        found = matches[0]
    return found


def find_layers(model, layer):
    """`(layers, names)` of `layer`, one layer (as `find_layer` takes it) or
    a list or tuple of them, each layer once; the names are the strings
    given, or the layers' names (distinct, else a `ValueError`)."""
    given = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if not given:
        raise ValueError("`layer` must name at least one layer. Received: layer=[]")
    layers = [find_layer(model, place) for place in given]
    names = [place if isinstance(place, str) else place.name for place in given]
    repeated = sorted({n for n in names if names.count(n) > 1} | {
        names[i] for i, l in enumerate(layers) if any(l is m for m in layers[:i])})
    if repeated:
        raise ValueError(
            f"`layer` must list each layer once, under distinct names (pass nested "
            f"layers by their paths, 'outer/inner'). Received: layer={given!r}, "
            f"repeating {repeated}")
    return layers, names


class LayerOutputs:
    """Runs `model` once and returns the outputs of `layers`, a list: through
    a Functional sub-model where the graph allows it for every layer, else by
    capturing the layers' calls (for subclassed models and layers nested
    inside another layer)."""

    def __init__(self, model, layers):
        self.model, self.layers = model, layers
        try:
            self.submodel = keras.Model(model.input, [layer.output for layer in layers])
        except (AttributeError, ValueError, TypeError):
            self.submodel = None

    def __call__(self, inputs):
        if self.submodel is not None:
            outputs = self.submodel(inputs, training=False)
            return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        captured = [[] for _ in self.layers]
        for layer, into in zip(self.layers, captured):
            layer.call = self._capture(layer.call, into)
        try:
            self.model(inputs, training=False)
        finally:
            for layer in self.layers:
                del layer.call
        for layer, outputs in zip(self.layers, captured):
            if not outputs:
                raise ValueError(
                    f"Layer '{layer.name}' was not called by model "
                    f"'{self.model.name}': its output is not reachable.")
        return [outputs[-1] for outputs in captured]

    @staticmethod
    def _capture(original, into):
        def capture(*args, **kwargs):
            output = original(*args, **kwargs)
            into.append(output)
            return output
        return capture


__all__ = ["LayerOutputs", "find_layer", "find_layers"]
