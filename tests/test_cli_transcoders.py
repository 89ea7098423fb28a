"""`gated-sae train` on stores of several blocks: a transcoder from a store with
roles (`harvest --target-layer`), a crosscoder with `--crosscoder`, and their
one-line errors, each before any work.

A plain store, of one block or several without roles, still trains an SAE on
whole rows (`tests/test_cli.py`)."""

import argparse
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
import gated_sae_layers_cli as cli
from gated_sae_layers._keras_compat import sublayers
from gated_sae_layers.activations import ActivationStore
from gated_sae_layers.layers.skip_connection import SkipConnection

ROWS = 512


def _run(argv, capsys):
    assert cli.main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _fails(argv, capsys):
    """Runs `argv`, expecting a one-line user error; returns the message."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err.strip()


def _store(folder, blocks, roles=None, seed=0):
    """A store of `ROWS` rows of the `blocks` (`{name: width}`), with `roles`
    in its metadata if given; a target block `out` is a function of `in`, and
    blocks `layer_<l>` are views of one rank-2 signal at 5 times unit scale."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(ROWS, 2))
    metadata = {"blocks": [{"name": name, "width": width} for name, width in blocks.items()]}
    if roles is not None:
        metadata["roles"] = roles
    parts = []
    for name, width in blocks.items():
        if name == "out":  # a nonlinear MLP-like map of `in`, at another scale
            mixing = rng.normal(size=(parts[0].shape[1], width))
            parts.append(3.0 * np.maximum(parts[0] @ mixing, 0) + 2.0)
        elif name.startswith("layer_"):
            parts.append(5.0 * signal @ rng.normal(size=(2, width)))
        else:
            parts.append(rng.normal(size=(ROWS, width)))
    rows = np.concatenate(parts, axis=1).astype("float32")
    store = ActivationStore.create(folder, rows.shape[1], "float32", shard_rows=200,
                                   metadata=metadata)
    store.append(rows)
    store.close()
    return str(folder), rows


def _fvu(target, prediction):
    target, prediction = np.asarray(target, "float64"), np.asarray(prediction, "float64")
    return ((target - prediction) ** 2).sum() / ((target - target.mean(axis=0)) ** 2).sum()


# ------------------------------------------------------------ end to end
@pytest.mark.parametrize("skip", [True, False])
def test_a_store_with_roles_trains_a_transcoder(skip, tmp_path, capsys):
    store, rows = _store(tmp_path / "store", {"in": 6, "out": 4},
                         roles={"inputs": ["in"], "targets": ["out"]})
    out = tmp_path / "transcoder.keras"
    report = _run(["train", "--store", store, "--out", str(out), "--latent-dim", "32",
                   "--architecture", "topk", "--k", "4", "--epochs", "6", "--batch-size", "64",
                   "--lr", "0.01", "--quiet"] + (["--skip"] if skip else []), capsys)
    assert {key: report[key] for key in ("kind", "skip", "input_dim", "output_dim",
                                         "latent_dim", "inputs", "targets", "architecture")} == {
        "kind": "transcoder", "skip": skip, "input_dim": 6, "output_dim": 4, "latent_dim": 32,
        "inputs": ["in"], "targets": ["out"], "architecture": "topk"}
    assert report["normalization_scale"] != 1.0 and np.isfinite(report["loss"])
    model = keras.saving.load_model(out, safe_mode=True)
    assert model.is_transcoder and (model.input_dim, model.output_dim) == (6, 4)
    assert any(isinstance(layer, SkipConnection) for layer in sublayers(model)) == skip
    # The scale is folded: raw `x` in, `y_hat` in raw units out (a model left
    # in scaled units would be off by the scale, FVU far above 1).
    x, y = rows[:, :6], rows[:, 6:]
    y_hat = model.predict(x, verbose=0)["reconstruction"]
    assert y_hat.shape == (ROWS, 4)
    assert _fvu(y, y_hat) < 0.8
    assert _fvu(y, y_hat) == pytest.approx(report["fvu"], abs=0.25)


def test_crosscoder_trains_on_every_block_of_one_width(tmp_path, capsys):
    store, rows = _store(tmp_path / "store", {"layer_0": 4, "layer_1": 4, "layer_2": 4})
    out = tmp_path / "crosscoder.keras"
    report = _run(["train", "--store", store, "--out", str(out), "--crosscoder",
                   "--latent-dim", "16", "--epochs", "4", "--batch-size", "64", "--lr", "0.01",
                   "--target-l0", "4", "--quiet"], capsys)
    assert {key: report[key] for key in ("kind", "num_layers", "layers", "input_dim",
                                         "output_dim", "architecture")} == {
        "kind": "crosscoder", "num_layers": 3, "layers": ["layer_0", "layer_1", "layer_2"],
        "input_dim": 12, "output_dim": 12, "architecture": "relu"}
    assert report["target_l0"] == 4 and {"fvu_layer_0", "fvu_layer_2"} <= set(report)
    model = keras.saving.load_model(out, safe_mode=True)
    assert model.architecture["name"] == "crosscoder"
    assert model.architecture["arguments"]["num_layers"] == 3
    assert gsl.crosscoder_decoder_norms(model).shape == (3, 16)
    assert report["normalization_scale"] < 0.5  # rows at 5 times unit scale
    # The scale is folded: raw rows in, raw reconstructions out.
    reconstruction = model.predict(rows, verbose=0)["reconstruction"]
    assert _fvu(rows, reconstruction) == pytest.approx(report["fvu"], abs=0.15)
    assert _fvu(rows, reconstruction) < 0.7


def _args(store, **options):
    defaults = {"store": store, "crosscoder": False, "skip": False}
    return argparse.Namespace(**{**defaults, **options})


def test_what_each_store_trains(tmp_path):
    """Without roles or --crosscoder a store of several blocks still trains an
    SAE on whole rows (the old default); roles make a transcoder."""
    from gated_sae_layers.cli.train import store_layout

    plain, _ = _store(tmp_path / "plain", {"a": 3, "b": 5})
    layout = store_layout(_args(plain), ActivationStore.open(plain))
    assert (layout.kind, layout.input_dim, layout.output_dim) == ("sae", 8, 8)
    paired, _ = _store(tmp_path / "paired", {"a": 2, "in": 3, "out": 5},
                       roles={"inputs": ["a", "in"], "targets": "out"})
    layout = store_layout(_args(paired), ActivationStore.open(paired))
    assert (layout.kind, layout.input_dim, layout.output_dim) == ("transcoder", 5, 5)
    assert layout.columns().tolist() == list(range(10))
    assert layout.target_columns().tolist() == [5, 6, 7, 8, 9]


# ------------------------------------------------------------ errors, before any work
def test_transcoder_and_crosscoder_errors_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "model.keras")
    plain, _ = _store(tmp_path / "plain", {"a": 4, "b": 4})
    assert _fails(["train", "--store", plain, "--out", out, "--skip"], capsys) == (
        "gated-sae: error: `--skip` trains a skip transcoder, which needs a store whose "
        "metadata has roles: its input and target blocks (harvest with --layer and "
        f"--target-layer). Received: the store at {plain}, blocks ['a', 'b'] and no roles")
    unknown, _ = _store(tmp_path / "unknown", {"in": 4, "out": 2},
                        roles={"inputs": ["in"], "targets": ["mlp_out"]})
    with_roles, _ = _store(tmp_path / "with_roles", {"in": 4, "out": 2},
                           roles={"inputs": ["in"], "targets": ["out"]})
    assert "has roles, so it trains a transcoder" in _fails(
        ["train", "--store", with_roles, "--out", out, "--decoder-lr-multiplier", "3"], capsys)
    message = _fails(["train", "--store", unknown, "--out", out], capsys)
    assert message.startswith("gated-sae: error: The store's roles must name its blocks, "
                              "['in', 'out'],") and "'mlp_out'" in message
    empty_role, _ = _store(tmp_path / "empty_role", {"in": 4, "out": 2},
                           roles={"inputs": ["in"], "targets": []})
    assert "each list not empty" in _fails(
        ["train", "--store", empty_role, "--out", out], capsys)
    unequal, _ = _store(tmp_path / "unequal", {"a": 4, "b": 3})
    assert _fails(["train", "--store", unequal, "--out", out, "--crosscoder"], capsys) == (
        "gated-sae: error: `--crosscoder` reads every block of the store as one layer, so "
        "it needs two or more blocks of one width (harvest them with --layer repeated). "
        f"Received: the store at {unequal} with blocks {{'a': 4, 'b': 3}}")
    single = ActivationStore.create(tmp_path / "single", 4, "float32")
    single.append(np.zeros((8, 4), "float32"))
    single.close()
    assert "two or more blocks of one width" in _fails(
        ["train", "--store", str(tmp_path / "single"), "--out", out, "--crosscoder"], capsys)
    # Checked before the store is read.
    assert "pass one of them" in _fails(
        ["train", "--store", plain, "--out", out, "--crosscoder", "--skip"], capsys)
    assert _fails(["train", "--store", plain, "--out", out, "--crosscoder",
                   "--architecture", "gated"], capsys) == (
        "gated-sae: error: `--crosscoder` takes --architecture relu, topk, batch_topk "
        "(gsl.build_crosscoder; relu, the paper's, by default). Received: --architecture gated")
    assert "--k sets its L0" in _fails(
        ["train", "--store", plain, "--out", out, "--crosscoder", "--architecture", "topk",
         "--sparsity-coefficient", "1"], capsys)
    assert not (tmp_path / "model.keras").exists()


def test_the_crosscoder_architectures_are_the_builders():
    from gated_sae_layers.models.builders.crosscoder import CROSSCODER_ARCHITECTURES
    from gated_sae_layers_cli.train import CROSSCODER_ARCHITECTURES as CLI

    assert CLI == CROSSCODER_ARCHITECTURES


def test_train_help_is_fast_and_names_the_new_options():
    probe = ("import sys; before = set(sys.modules)\n"
             "from gated_sae_layers_cli import main\n"
             "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
             "heavy = {m.split('.')[0] for m in set(sys.modules) - before} & "
             "{'numpy', 'keras', 'tensorflow', 'jax', 'gated_sae_layers'}\n"
             "print('HEAVY', sorted(heavy))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    text = " ".join(result.stdout.split())
    assert "--skip" in text and "--crosscoder" in text
    assert "(default: gated; relu with --crosscoder, which takes relu, topk or batch_topk)" \
        in text and "(default: None)" not in text
