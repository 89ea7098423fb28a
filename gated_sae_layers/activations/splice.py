"""Splices an SAE into a model in place of a layer's output, and measures the cost."""

import contextlib

import keras
import numpy as np
from keras import ops

from gated_sae_layers.activations.places import find_layer
from gated_sae_layers.activations.rows import example_batches, flatten_rows

MODES = ("clean", "sae", "zero")


def _reconstruct(sae, activations, add_error):
    shape = ops.shape(activations)
    rows = flatten_rows(activations)
    reconstruction = sae(rows, training=False)["reconstruction"]
    if add_error:
        # The SAE's error term added back: the output is the clean value,
        # with the reconstruction carrying all gradient.
        reconstruction = reconstruction + ops.stop_gradient(rows - reconstruction)
    return ops.reshape(ops.cast(reconstruction, activations.dtype), shape)


@contextlib.contextmanager
def spliced(model, layer, sae=None, mode="sae", add_error=False):
    """Within this context, `layer`'s output in `model` is replaced.

    `mode="sae"`: by the SAE's reconstruction (rows of the output's last
    axis go through the SAE); `mode="zero"`: by zeros (zero ablation);
    `mode="clean"`: left alone. With `add_error=True` the SAE's error
    `x - x_hat` is added back, so outputs equal the clean ones while the
    SAE's latents sit in the computation (for attribution).

    Works with Functional, Sequential and subclassed models and keras_hub
    backbones: the layer's `call` is wrapped while the context is open.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    if mode == "sae" and sae is None:
        raise ValueError("`mode='sae'` needs an `sae`.")
    layer = find_layer(model, layer)
    if mode == "clean":
        yield model
        return
    original = layer.call

    def call(*args, **kwargs):
        output = original(*args, **kwargs)
        if mode == "zero":
            return ops.zeros_like(output)
        return _reconstruct(sae, output, add_error)

    layer.call = call
    try:
        yield model
    finally:
        del layer.call


class SplicedModel(keras.Model):
    """`model` with `layer`'s output replaced by the SAE's reconstruction.

    Calling it runs `model` inside `spliced(model, layer, sae, ...)`. It is
    for evaluation and attribution; it is not saved (save the SAE and the
    model separately).

    Args:
        model: the Keras model.
        layer: the layer name or object whose output is replaced.
        sae: a trained `SparseAutoencoder` over that layer's width.
        add_error: add the SAE's error term back.
    """

    def __init__(self, model, layer, sae, add_error=False, **kwargs):
        super().__init__(**kwargs)
        self.model, self.layer_name = model, find_layer(model, layer).name
        self.sae, self.add_error = sae, add_error

    def call(self, inputs, training=False):
        with spliced(self.model, self.layer_name, self.sae, "sae", self.add_error):
            return self.model(inputs, training=False)


def loss_recovered(model, layer, sae, inputs, loss_fn, targets=None, batch_size=64):
    """The downstream loss with clean, SAE-reconstructed and zero-ablated activations.

    `loss_fn(outputs, clean_outputs, batch_targets)` returns one loss per
    example (for a classifier: cross-entropy of `outputs` against the
    labels given as `targets`; for a sentence model: `1 - cos` of `outputs`
    to `clean_outputs`). Each loss is the mean over all examples, and

    ```
    fraction_recovered = (L_zero - L_sae) / (L_zero - L_clean)
    ```

    is 1 when the SAE costs nothing, 0 when it is as bad as removing the
    layer's output.

    Returns:
        A dict with `clean`, `sae`, `zero` and `fraction_recovered`.
    """
    sums = {mode: 0.0 for mode in MODES}
    count = 0
    target_batches = (example_batches(targets, batch_size, "targets")
                      if targets is not None else None)
    for batch in example_batches(inputs, batch_size):
        batch_targets = next(target_batches) if target_batches is not None else None
        clean = model(batch, training=False)
        for mode in MODES:
            with spliced(model, layer, sae, mode):
                outputs = clean if mode == "clean" else model(batch, training=False)
            losses = np.asarray(ops.convert_to_numpy(loss_fn(outputs, clean, batch_targets)),
                                "float64")
            sums[mode] += float(losses.sum())
        count += len(losses)
    result = {mode: total / count for mode, total in sums.items()}
    gap = result["zero"] - result["clean"]
    result["fraction_recovered"] = (result["zero"] - result["sae"]) / gap if gap else float("nan")
    return result
