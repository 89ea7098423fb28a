"""Splices an SAE into a model in place of a layer's output, or a transcoder in
place of the block between two layers, and measures the cost."""

import collections
import contextlib

import keras
import numpy as np
from keras import ops

from gated_sae_layers.activations.places import find_layer
from gated_sae_layers.activations.rows import example_batches, flatten_rows

MODES = ("clean", "sae", "zero")


def _is_transcoder(sae):
    return bool(getattr(sae, "is_transcoder", False))


def splice_places(model, layer, sae=None, input_layer=None):
    """`(layer, input_layer)` of a splice, resolved once by `find_layer`
    (`input_layer` stays `None` for an SAE), after checking that a
    transcoder is given the place it reads and an SAE is not."""
    layer = find_layer(model, layer)
    if input_layer is None:
        if _is_transcoder(sae):
            raise ValueError(
                f"`sae` is a transcoder (it reads rows of width {sae.input_dim} and "
                f"predicts rows of width {sae.output_dim}): pass `input_layer=`, the "
                "layer whose output it reads (an MLP block's input), beside `layer=`, "
                "the layer whose output its prediction replaces (the block's output). "
                "Received: input_layer=None")
        return layer, None
    reads = find_layer(model, input_layer)
    if sae is not None and not _is_transcoder(sae):
        raise ValueError(
            "`input_layer` is for a transcoder (`build_transcoder`), which reads one "
            "place and replaces another; `sae` is an SAE, which reconstructs the output "
            "of `layer` itself. Received: input_layer="
            f"{input_layer if isinstance(input_layer, str) else reads.name!r} with an SAE")
    if reads is layer:
        raise ValueError(
            "`input_layer` and `layer` must be two places: the transcoder reads the "
            "output of `input_layer` and replaces the output of `layer`. Received: "
            f"the same layer '{layer.name}' twice")
    return layer, reads


def _check_width(sae, attribute, argument, place, output):
    """Raises where `output` of `place` is not `sae.<attribute>` wide: the
    width the SAE reads (`input_dim`) or gives (`output_dim`)."""
    width = getattr(sae, attribute, None)
    if width is not None and output.shape[-1] is not None and output.shape[-1] != width:
        role = "reads" if attribute == "input_dim" else "gives"
        raise ValueError(
            f"`sae` {role} rows of width {width}, but `{argument}` '{place.name}' outputs "
            f"width {output.shape[-1]}. Received: output shape {tuple(output.shape)}")


def _predict(sae, reads, output, add_error):
    """`sae`'s prediction from the rows of `reads`, shaped as `output`; with
    `add_error`, plus `stop_gradient(output - prediction)`: the value is
    `output`, the gradient flows through the prediction."""
    prediction = sae(flatten_rows(reads), training=False)["reconstruction"]
    if add_error:
        rows = flatten_rows(output)
        prediction = ops.cast(prediction, rows.dtype)
        prediction = prediction + ops.stop_gradient(rows - prediction)
    return ops.reshape(ops.cast(prediction, output.dtype), ops.shape(output))


def _same_positions(shape, other):
    """Whether two shapes agree but in the last axis (unknown sizes agree)."""
    return len(shape) == len(other) and all(
        a is None or b is None or a == b for a, b in zip(shape[:-1], other[:-1]))


def _zeroing(original):
    def call(*args, **kwargs):
        return ops.zeros_like(original(*args, **kwargs))
    return call


def _reconstructing(original, sae, add_error, layer):
    def call(*args, **kwargs):
        output = original(*args, **kwargs)
        _check_width(sae, "output_dim", "layer", layer, output)
        return _predict(sae, output, output, add_error)
    return call


def _capturing(original, pending):
    def call(*args, **kwargs):
        output = original(*args, **kwargs)
        pending.append(output)
        return output
    return call


def _emptying(original, pending):
    def call(*args, **kwargs):
        pending.clear()  # a new forward pass of the model: nothing read yet
        return original(*args, **kwargs)
    return call


def _transcoding(original, sae, add_error, pending, layer, reads_from):
    def call(*args, **kwargs):
        output = original(*args, **kwargs)
        if not pending:
            raise ValueError(
                f"`layer` '{layer.name}' ran with no output of `input_layer` "
                f"'{reads_from.name}' to read in this forward pass: the transcoder reads "
                "the output of `input_layer` (the MLP block's input) to replace that of "
                "`layer` (the block's output), so `input_layer` must run first. Check "
                "that the two are not swapped.")
        reads = pending.popleft()
        _check_width(sae, "input_dim", "input_layer", reads_from, reads)
        _check_width(sae, "output_dim", "layer", layer, output)
        if not _same_positions(reads.shape, output.shape):
            raise ValueError(
                f"`input_layer` '{reads_from.name}' and `layer` '{layer.name}' must give "
                "one row per position alike (the same shape but the last axis). "
                f"Received: {tuple(reads.shape)} and {tuple(output.shape)}")
        return _predict(sae, reads, output, add_error)
    return call


@contextlib.contextmanager
def _patched(calls):
    """Sets each `target.call` of `calls` (a dict) while open, then restores it."""
    previous = {target: vars(target).get("call") for target in calls}
    for target, call in calls.items():
        target.call = call
    try:
        yield
    finally:
        for target, call in previous.items():
            if call is None:
                del target.call
            else:
                target.call = call


@contextlib.contextmanager
def spliced(model, layer, sae=None, mode="sae", add_error=False, input_layer=None):
    """Within this context, `layer`'s output in `model` is replaced.

    `mode="sae"`: by the SAE's reconstruction of that output (rows of its
    last axis go through the SAE), or, for a transcoder, by the
    transcoder's prediction from the output of `input_layer` in the same
    forward pass (an MLP block's input; `layer` is the block's output);
    `mode="zero"`: by zeros (zero ablation); `mode="clean"`: left alone.
    With `add_error=True` the error `output - prediction` is added back
    (through `stop_gradient`), so outputs equal the clean ones while the
    latents sit in the computation (for attribution).

    ```
    SAE:         layer(...) -> sae(layer(...))
    transcoder:  layer(...) -> transcoder(input_layer(...))
    add_error:   ... + stop_gradient(layer(...) - prediction)
    ```

    Works with Functional, Sequential and subclassed models and keras_hub
    backbones: the layers' `call` (and, for a transcoder, `model.call`,
    which starts each pass with nothing read) are wrapped while the context
    is open. Layers are named as `find_layer` takes them, paths
    `"outer/inner"` included, e.g. in MiniLM
    `layer="transformer_layer_3/feedforward_output_dense"`,
    `input_layer="transformer_layer_3/self_attention_layer_norm"`.

    Args:
        model: the Keras model.
        layer: the layer (name, path or object) whose output is replaced.
        sae: an SAE over `layer`'s width, or a transcoder from the width of
            `input_layer` to that of `layer`; not needed for `"zero"`.
        mode: `"sae"`, `"zero"` or `"clean"`.
        add_error: bool, add the error term back (exact outputs).
        input_layer: for a transcoder, the layer whose output it reads
            (required then, refused for an SAE).

    Example:

    >>> import keras, numpy as np
    >>> import gated_sae_layers as gsl
    >>> x = keras.Input((4,))
    >>> mlp_in = keras.layers.Dense(4, name="mlp_in")(x)
    >>> mlp_out = keras.layers.Dense(4, name="mlp_out")(
    ...     keras.layers.Dense(8, activation="relu")(mlp_in))
    >>> net = keras.Model(x, keras.layers.Dense(2)(mlp_out))
    >>> transcoder = gsl.build_transcoder("topk", 4, 4, 16, k=2, skip=True)
    >>> inputs = np.ones((3, 4), "float32")
    >>> with spliced(net, "mlp_out", transcoder, input_layer="mlp_in", add_error=True):
    ...     exact = net(inputs)
    >>> np.allclose(exact, net(inputs), atol=1e-6)
    True
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    if mode == "sae" and sae is None:
        raise ValueError("`mode='sae'` needs an `sae`.")
    layer, reads_from = splice_places(model, layer, sae if mode == "sae" else None,
                                      input_layer)
    if mode == "clean":
        yield model
        return
    if mode == "zero":
        calls = {layer: _zeroing(layer.call)}
    elif reads_from is None:
        calls = {layer: _reconstructing(layer.call, sae, add_error, layer)}
    else:
        pending = collections.deque()
        calls = {model: _emptying(model.call, pending),
                 reads_from: _capturing(reads_from.call, pending),
                 layer: _transcoding(layer.call, sae, add_error, pending, layer, reads_from)}
    with _patched(calls):
        yield model


class SplicedModel(keras.Model):
    """`model` with `layer`'s output replaced by the SAE's (or transcoder's) prediction.

    Calling it runs `model` inside `spliced(model, layer, sae, ...)`. It is
    for evaluation and attribution; it is not saved (save the SAE and the
    model separately). The places are resolved once, when it is built, so a
    path names the same layer on every call.

    Args:
        model: the Keras model.
        layer: the layer (name, path or object) whose output is replaced.
        sae: a trained `SparseAutoencoder` over that layer's width, or a
            transcoder reading `input_layer`.
        add_error: add the error term back.
        input_layer: for a transcoder, the layer whose output it reads.
    """

    def __init__(self, model, layer, sae, add_error=False, input_layer=None, **kwargs):
        super().__init__(**kwargs)
        places = splice_places(model, layer, sae, input_layer)  # Layer objects
        self.model, self.sae, self.add_error = model, sae, add_error
        self.layer, self.input_layer = places

    def call(self, inputs, training=False):
        with spliced(self.model, self.layer, self.sae, "sae", self.add_error,
                     self.input_layer):
            return self.model(inputs, training=False)


def loss_recovered(model, layer, sae, inputs, loss_fn, targets=None, batch_size=64,
                   input_layer=None):
    """The downstream loss with clean, SAE-reconstructed and zero-ablated activations.

    `loss_fn(outputs, clean_outputs, batch_targets)` returns one loss per
    example (for a classifier: cross-entropy of `outputs` against the
    labels given as `targets`; for a sentence model: `1 - cos` of `outputs`
    to `clean_outputs`). Each loss is the mean over all examples, and

    ```
    fraction_recovered = (L_zero - L_sae) / (L_zero - L_clean)
    ```

    is 1 when the SAE costs nothing, 0 when it is as bad as removing the
    layer's output. For a transcoder, `layer` is the MLP block's output
    (replaced by the prediction, or zeroed) and `input_layer` the block's
    input, which it reads (see `spliced`).

    Returns:
        A dict with `clean`, `sae`, `zero` and `fraction_recovered`.
    """
    layer, input_layer = splice_places(model, layer, sae, input_layer)
    sums = {mode: 0.0 for mode in MODES}
    count = 0
    target_batches = (example_batches(targets, batch_size, "targets")
                      if targets is not None else None)
    for batch in example_batches(inputs, batch_size):
        batch_targets = next(target_batches) if target_batches is not None else None
        clean = model(batch, training=False)
        for mode in MODES:
            with spliced(model, layer, sae, mode, input_layer=input_layer):
                outputs = clean if mode == "clean" else model(batch, training=False)
            losses = np.asarray(ops.convert_to_numpy(loss_fn(outputs, clean, batch_targets)),
                                "float64")
            sums[mode] += float(losses.sum())
        count += len(losses)
    result = {mode: total / count for mode, total in sums.items()}
    gap = result["zero"] - result["clean"]
    result["fraction_recovered"] = (result["zero"] - result["sae"]) / gap if gap else float("nan")
    return result
