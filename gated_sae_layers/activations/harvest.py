"""Collects a layer's activations from any Keras model."""

import hashlib

import numpy as np
from keras import ops

import keras

from gated_sae_layers._keras_compat import sublayers
from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.activations.rows import example_batches, flatten_rows, num_examples
from gated_sae_layers.activations.store import FINGERPRINT_KEY


def find_layer(model, layer):
    """`layer` of `model`: a `Layer` as given, or the layer of that name
    (nested layers searched too); raises a `ValueError` listing the model's
    layers where none has the name, a `TypeError` for anything else."""
    if isinstance(layer, keras.layers.Layer):
        return layer
    if isinstance(layer, str):
        try:
            return model.get_layer(layer)
        except ValueError:
            names = [l.name for l in sublayers(model)]
            matches = [l for l in sublayers(model)
                       if l.name == layer]
            if matches:
                return matches[0]
            raise ValueError(
                f"Model '{model.name}' has no layer named {layer!r}. Its layers: "
                f"{names[:20]}{' ...' if len(names) > 20 else ''}") from None
    raise TypeError(
        f"`layer` must be a layer name or a Layer. Received: layer={layer!r}")


class _OutputOf:
    """Runs `model` and returns `layer`'s output: through a Functional
    sub-model where the graph allows it, else by capturing the layer's call
    (for subclassed models)."""

    def __init__(self, model, layer):
        self.model, self.layer = model, layer
        self.submodel = None
        try:
            output = layer.output
            self.submodel = keras.Model(model.input, output)
        except (AttributeError, ValueError, TypeError):
            self.submodel = None

    def __call__(self, inputs):
        if self.submodel is not None:
            return self.submodel(inputs, training=False)
        captured = []
        original = self.layer.call

        def capture(*args, **kwargs):
            output = original(*args, **kwargs)
            captured.append(output)
            return output

        self.layer.call = capture
        try:
            self.model(inputs, training=False)
        finally:
            del self.layer.call
        if not captured:
            raise ValueError(
                f"Layer '{self.layer.name}' was not called by model "
                f"'{self.model.name}': its output is not reachable.")
        return captured[-1]


def _batches(inputs, batch_size):
    """Yields (batch inputs, batch size) from arrays, dicts of arrays or a dataset."""
    if hasattr(inputs, "element_spec"):  # tf.data.Dataset
        for element in inputs.as_numpy_iterator():
            x = element[0] if isinstance(element, tuple) else element
            yield x, len(keras.tree.flatten(x)[0])
        return
    for batch in example_batches(inputs, batch_size):
        yield batch, num_examples(batch)


def _row_mask(batch_inputs, drop_padding, drop_token_ids, tokens):
    if not isinstance(batch_inputs, dict):
        return None
    mask = np.ones(tokens.shape[:2], bool)
    if drop_padding and "padding_mask" in batch_inputs:
        mask &= np.asarray(batch_inputs["padding_mask"]).astype(bool)
    if drop_token_ids and "token_ids" in batch_inputs:
        mask &= ~np.isin(np.asarray(batch_inputs["token_ids"]), list(drop_token_ids))
    return mask


def inputs_fingerprint(batch_inputs, num_examples):
    """What a resumed harvest must match: `num_examples` (`None` for a
    dataset) and the sha256 of the first example's arrays, dtypes and shapes
    (the first example, not the first batch, so a resume may change
    `batch_size`)."""
    digest = hashlib.sha256()
    for array in keras.tree.flatten(batch_inputs):
        first = np.ascontiguousarray(np.asarray(array)[:1])
        digest.update(f"{first.dtype.str}{first.shape[1:]};".encode())
        digest.update(first.tobytes())
    return {"num_examples": num_examples, "first_example_sha256": digest.hexdigest()}


def _check_fingerprint(store, fingerprint):
    """Records `fingerprint` in a store without one; else raises if it differs."""
    recorded = store.metadata.get(FINGERPRINT_KEY)
    if recorded is None:
        store.update_metadata({FINGERPRINT_KEY: fingerprint})
        return
    if not isinstance(recorded, dict):
        recorded = {}
    differing = sorted(k for k, v in fingerprint.items() if k not in recorded or (
        None not in (v, recorded[k]) and recorded[k] != v))
    if differing:
        raise ValueError(
            f"Cannot resume the harvest into {store.path}: it was harvested from other "
            f"inputs (they differ in {differing}), and resuming would mix two sources. "
            f"The store has {FINGERPRINT_KEY}={recorded}. Received: {fingerprint}. "
            "Pass the same inputs, or harvest into another folder.")
    if recorded.get("num_examples") is None and fingerprint["num_examples"] is not None:
        store.update_metadata({FINGERPRINT_KEY: fingerprint})


def harvest(model, layer, inputs, batch_size=32, store=None, drop_padding=True,
            drop_token_ids=(), progress=True):
    """Collects the output of `layer` in `model` for every example of `inputs`.

    Works with Functional and Sequential models, keras_hub backbones such as
    `BertBackbone`, and subclassed models whose layer is called in
    `call`. Outputs of shape `(batch, tokens, width)` are flattened to rows;
    with dict inputs holding `padding_mask` (keras_hub's convention), padded
    positions are dropped, and positions whose `token_ids` are in
    `drop_token_ids` (e.g. `[CLS]`, `[SEP]`) too.

    Args:
        model: a Keras model.
        layer: a layer name (nested layers are searched too) or a `Layer`.
        inputs: an array, a dict of arrays, or a `tf.data.Dataset` of
            batches (`x` or `(x, y)`).
        batch_size: examples per forward pass (arrays only).
        store: an `ActivationStore` writer to write to (for data beyond
            memory); with `None` the rows are returned as an array. A store
            with `progress` resumes: the examples already on disk are
            skipped. The store's metadata records `inputs_fingerprint`
            (see `inputs_fingerprint`), and a resume with other inputs
            raises `ValueError`. If the harvest fails, the store is
            abandoned as in a crash (`store.abandon()`: its lock is
            released) and `ActivationStore.create(..., resume=True)`
            continues it.
        drop_padding: drop positions where `padding_mask` is 0.
        drop_token_ids: token ids whose positions are dropped.
        progress: show a Keras progress bar.

    Returns:
        `(rows, width)` float32 array, or the store (closed) when given one.
    """
    try:
        batch_size = check_positive_int(batch_size, "batch_size")
        run = _OutputOf(model, find_layer(model, layer))
        total = (None if hasattr(inputs, "element_spec")
                 else len(keras.tree.flatten(inputs)[0]))
        bar = keras.utils.Progbar(total, unit_name="example") if progress else None
        collected = _run(run, inputs, batch_size, store, total, bar,
                         (drop_padding, drop_token_ids))
    except BaseException:
        if store is not None:
            store.abandon()
        raise
    if store is not None:
        store.close()
        return store
    return np.concatenate(collected) if collected else np.zeros((0, 0), "float32")


def _run(run, inputs, batch_size, store, total, bar, drop):
    """Runs every batch not yet in `store`; the rows, where there is no store."""
    done = store.progress.get("examples_done", 0) if store is not None else 0
    skip_rows = store.progress.get("rows_into_next_example", 0) if store is not None else 0
    collected, example = [], 0
    for batch_inputs, size in _batches(inputs, batch_size):
        if store is not None and example == 0:
            _check_fingerprint(store, inputs_fingerprint(batch_inputs, total))
        if example + size <= done:
            example += size
            if bar:
                bar.add(size)
            continue
        output = np.asarray(ops.convert_to_numpy(run(batch_inputs)), "float32")
        mask = _row_mask(batch_inputs, *drop, output) if (
            output.ndim == 3) else None
        for i in range(size):
            index = example + i
            if index < done:
                continue
            rows = flatten_rows(output[i] if output.ndim > 1 else output[i][None])
            if mask is not None:
                rows = rows[mask[i].reshape(-1)]
            if index == done and skip_rows:
                rows = rows[skip_rows:]
            if store is not None:
                store.append(rows, source_index=index)
            else:
                collected.append(rows)
        example += size
        if bar:
            bar.add(size)
    return collected
