"""Collects a layer's activations, or several layers' side by side, from any
Keras model."""

import hashlib

import numpy as np
from keras import ops

import keras

from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.activations.places import LayerOutputs, find_layers
from gated_sae_layers.activations.rows import example_batches, flatten_rows, num_examples
from gated_sae_layers.activations.store import BLOCKS_KEY, FINGERPRINT_KEY


def _side_by_side(outputs, names):
    """`outputs` (numpy, one per layer) joined along the last axis, and their
    blocks `[{"name", "width"}]`; a `(batch,)` output is one column."""
    shapes = [o.shape for o in outputs]
    outputs = [o[:, None] if o.ndim == 1 else o for o in outputs]
    if len({o.shape[:-1] for o in outputs}) > 1:
        received = ", ".join(f"{n!r}: {shape}" for n, shape in zip(names, shapes))
        raise ValueError(
            "The layers' outputs must have the same shape in every axis but the last, "
            "to be paired row by row (one row per example or position, their widths "
            f"side by side). Received: {received}")
    blocks = [{"name": n, "width": int(o.shape[-1])} for n, o in zip(names, outputs)]
    return (outputs[0] if len(outputs) == 1 else np.concatenate(outputs, -1)), blocks


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


def _check_blocks(store, blocks, record):
    """Checks `blocks` against those `store` records; records them where it
    has none and `record` (a harvest of a list of layers)."""
    recorded = store.metadata.get(BLOCKS_KEY)
    if recorded is None and not record:
        return
    width = sum(block["width"] for block in blocks)
    if width != store.input_dim:
        raise ValueError(
            f"The store at {store.path} holds rows of width {store.input_dim}, but the "
            f"layers' outputs are {width} wide side by side. Create it with "
            f"input_dim={width}. Received: blocks={blocks}")
    if recorded is None:
        store.update_metadata({BLOCKS_KEY: blocks})
    elif recorded != blocks:
        raise ValueError(
            f"Cannot resume the harvest into {store.path}: its rows hold the blocks "
            f"{recorded}, and resuming would mix two sources. Received: blocks={blocks}. "
            "Harvest the same layers, in the same order, or into another folder.")


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

    Several places at once (transcoders, crosscoders): with a list of
    layers the model runs once per batch and row `i` is the layers' rows
    `i` side by side, `[out_0[i] | out_1[i] | ...]`, with the same rows
    dropped from each. Every output must have the same shape but for its
    last axis (else `ValueError`). A store then records the column blocks
    in its metadata (`blocks`: `[{"name": ..., "width": ...}, ...]`, read
    back as `ActivationStore.blocks`), and a resume must list the same
    layers; `paired_dataset` streams chosen blocks as `(x, y)` pairs.

    Naming layers: a name searches nested layers too (the first match);
    a path `"outer/inner"` picks a layer inside another, e.g. in a
    keras_hub transformer, whose blocks share their sublayers' names.
    The MLP (feed-forward) block of MiniLM/BERT's `transformer_layer_L`
    (post-layer-norm, `normalize_first=False`) reads
    `"transformer_layer_L/self_attention_layer_norm"` (the attention
    sublayer's residual stream, normalized) and writes
    `"transformer_layer_L/feedforward_output_dense"` (before dropout and
    the residual); its hidden activations are
    `"transformer_layer_L/feedforward_intermediate_dense"`. (In a
    pre-layer-norm encoder, `normalize_first=True`, the MLP reads
    `"transformer_layer_L/feedforward_layer_norm"`.) A transcoder of block
    2 of MiniLM:

    ```python
    rows = harvest(backbone, ["transformer_layer_2/self_attention_layer_norm",
                              "transformer_layer_2/feedforward_output_dense"], inputs)
    mlp_in, mlp_out = rows[:, :384], rows[:, 384:]
    ```

    Args:
        model: a Keras model.
        layer: a layer name or path (see above) or a `Layer`; or a list or
            tuple of them, each layer once (their blocks are named by the
            strings given, or the layers' names).
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
        `(rows, width)` float32 array (`width` the sum of the layers'
        widths), or the store (closed) when given one.
    """
    try:
        batch_size = check_positive_int(batch_size, "batch_size")
        layers, names = find_layers(model, layer)
        run = LayerOutputs(model, layers)
        total = (None if hasattr(inputs, "element_spec")
                 else len(keras.tree.flatten(inputs)[0]))
        bar = keras.utils.Progbar(total, unit_name="example") if progress else None
        collected = _run(run, names, isinstance(layer, (list, tuple)), inputs,
                         batch_size, store, total, bar, (drop_padding, drop_token_ids))
    except BaseException:
        if store is not None:
            store.abandon()
        raise
    if store is not None:
        store.close()
        return store
    return np.concatenate(collected) if collected else np.zeros((0, 0), "float32")


def _run(run, names, several, inputs, batch_size, store, total, bar, drop):
    """Runs every batch not yet in `store`; the rows, where there is no store.
    `several`: `layer` was a list (the store records the blocks)."""
    done = store.progress.get("examples_done", 0) if store is not None else 0
    skip_rows = store.progress.get("rows_into_next_example", 0) if store is not None else 0
    collected, example = [], 0
    for batch_inputs, size in _batches(inputs, batch_size):
        check = store is not None and example == 0
        if check:
            _check_fingerprint(store, inputs_fingerprint(batch_inputs, total))
            check = several or BLOCKS_KEY in store.metadata
        if example + size <= done and not check:
            example += size
            if bar:
                bar.add(size)
            continue
        output, blocks = _side_by_side(
            [np.asarray(ops.convert_to_numpy(o), "float32") for o in run(batch_inputs)],
            names)
        if check:
            _check_blocks(store, blocks, several)
        mask = _row_mask(batch_inputs, *drop, output) if (
            output.ndim == 3) else None
        for i in range(size):
            index = example + i
            if index < done:
                continue
            rows = flatten_rows(output[i])
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
