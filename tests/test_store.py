import json

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers.activations import ActivationStore, StoreCorruptionError, store_dataset


def _rows(n, width=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, width)).astype("float32")


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_is_exact(tmp_path, dtype):
    data = _rows(23)
    store = ActivationStore.create(tmp_path, 5, dtype=dtype, shard_rows=10,
                                   metadata={"model": "m", "layer": "l"})
    store.append(data[:7])
    store.append(data[7:])
    store.close()
    reopened = ActivationStore.open(tmp_path)
    assert [s["rows"] for s in reopened.manifest["shards"]] == [10, 10, 3]
    assert reopened.metadata == {"model": "m", "layer": "l"}
    np.testing.assert_array_equal(reopened.read_all(), data.astype(dtype).astype("float32"))


def test_crash_loses_only_the_shard_in_flight_and_resumes(tmp_path):
    data = _rows(35)
    store = ActivationStore.create(tmp_path, 5, shard_rows=10)
    for example in range(5):  # five examples of five rows
        store.append(data[5 * example:5 * example + 5], source_index=example)
    assert store.buffered_rows == 5
    del store  # crash: the 5 buffered rows were never written
    (tmp_path / "shard_00002.npy.tmp").write_bytes(b"half a shard")  # torn write
    resumed = ActivationStore.create(tmp_path, 5, shard_rows=10, resume=True)
    assert resumed.num_rows == 20
    assert resumed.progress == {"examples_done": 4, "rows_into_next_example": 0}
    resumed.append(data[20:])  # the caller restarts after the last full shard
    resumed.close()
    np.testing.assert_array_equal(ActivationStore.open(tmp_path).read_all(),
                                  data.astype("float16").astype("float32"))


def test_progress_inside_an_example(tmp_path):
    store = ActivationStore.create(tmp_path, 5, shard_rows=4)
    store.append(_rows(3), source_index=0)
    store.append(_rows(6), source_index=1)  # shard ends 1 row into example 1, next at 5
    assert store.progress == {"examples_done": 1, "rows_into_next_example": 5}


def test_corruption_is_reported_clearly(tmp_path):
    store = ActivationStore.create(tmp_path, 5, shard_rows=4)
    store.append(_rows(8))
    store.close()
    shard = tmp_path / "shard_00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-3] ^= 0xFF
    shard.write_bytes(bytes(raw))
    store = ActivationStore.open(tmp_path)
    store.read_shard(0)
    with pytest.raises(StoreCorruptionError, match="shard_00001.npy.*checksum"):
        store.read_shard(1)
    shard.unlink()
    with pytest.raises(StoreCorruptionError, match="shard_00001.npy.*missing"):
        ActivationStore.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreCorruptionError, match="not valid JSON"):
        ActivationStore.open(tmp_path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        ActivationStore.create(tmp_path / "a", 5, dtype="int8")
    store = ActivationStore.create(tmp_path / "b", 5)
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        store.append(np.ones((3, 4), "float32"))
    with pytest.raises(ValueError, match="NaN"):
        store.append(np.full((1, 5), np.nan, "float32"))
    with pytest.raises(FileExistsError, match="resume=True"):
        ActivationStore.create(tmp_path / "b", 5)
    with pytest.raises(ValueError, match="Cannot resume"):
        ActivationStore.create(tmp_path / "b", 6, resume=True)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        ActivationStore.open(tmp_path / "nothing")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["format"] == "gated_sae_layers.activation_store"


def test_stream_yields_every_row_once_per_epoch(tmp_path):
    data = np.arange(103 * 3, dtype="float32").reshape(103, 3)
    store = ActivationStore.create(tmp_path, 3, dtype="float32", shard_rows=10)
    store.append(data)
    store.close()
    dataset = store_dataset(ActivationStore.open(tmp_path), batch_size=8,
                            shuffle_buffer=32, seed=1)
    epochs = [np.concatenate([b.numpy() for b in dataset]) for _ in range(2)]
    for rows in epochs:
        assert rows.shape == data.shape
        np.testing.assert_array_equal(np.sort(rows[:, 0]), data[:, 0])
    assert not np.array_equal(epochs[0], data)  # shuffled across shards
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch


def test_stream_trains_a_sae(tmp_path):
    store = ActivationStore.create(tmp_path, 6, shard_rows=50)
    store.append(_rows(200, width=6))
    store.close()
    model = gsl.build_gated_sae(6, 12, 1e-3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(store_dataset(ActivationStore.open(tmp_path), 32), epochs=3,
                        verbose=0).history
    assert len(history["reconstruction"]) == 3
    assert history["reconstruction"][-1] < history["reconstruction"][0]


def test_fit_takes_a_store_directly(tmp_path):
    """`fit(store)` streams the store (through `store_dataset` on TensorFlow,
    shard by shard onto the device on JAX) and sees every row each epoch."""
    rows = np.random.default_rng(0).normal(size=(150, 6)).astype("float32")
    store = ActivationStore.create(tmp_path / "fit", 6, shard_rows=40)
    store.append(rows)
    store.close()
    model = gsl.build_gated_sae(6, 24, sparsity_coefficient=1e-3)
    model.compile(keras.optimizers.Adam(0.0))
    expected = model.evaluate(rows, batch_size=150, verbose=0, return_dict=True)
    history = model.fit(ActivationStore.open(tmp_path / "fit"), batch_size=32,
                        epochs=2, verbose=0)
    np.testing.assert_allclose(history.history["l0"], [expected["l0"]] * 2,
                               rtol=1e-3)
