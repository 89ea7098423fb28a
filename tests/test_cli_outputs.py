"""One output rule for every command and the API behind it: an existing output
is refused (one line, before any work) unless `--overwrite` / `overwrite=True`;
then it is replaced safely, and a file the command did not write is never
deleted or replaced."""

import fcntl
import json
import os
import pathlib

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
import gated_sae_layers_cli as cli
from gated_sae_layers.activations import ActivationStore, store as store_module
from gated_sae_layers.activations import _store_files
from gated_sae_layers.dashboard import output
from gated_sae_layers.interop import _checks, saelens
from gated_sae_layers_cli import outputs as cli_outputs


def _run(argv, capsys):
    assert cli.main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _fails(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gated-sae: error: "), err
    return err


def _leftovers(folder):
    """Temporary files or folders a command left beside its output."""
    return sorted(p.name for p in pathlib.Path(folder).iterdir()
                  if p.name.startswith(".") and ("partial" in p.name or ".old" in p.name))


def _store(folder, rows, width=8):
    store = ActivationStore.create(folder, width, "float32", shard_rows=64)
    store.append(rows)
    store.close()
    return str(folder)


@pytest.fixture()
def sae_file(tmp_path):
    model = gsl.build_sae("topk", 8, 16, k=2)
    model.save(tmp_path / "sae.keras")
    return str(tmp_path / "sae.keras")


def test_the_file_names_are_the_kits():
    assert cli_outputs.MANIFEST == store_module.MANIFEST
    assert cli_outputs.STORE_LOCK == store_module.LOCK
    assert cli_outputs.DASHBOARD_FILES == output.FILES
    # The command line's early check is the dashboard's own rule.
    assert cli_outputs._dashboard_output().PAGE_HEAD == output.PAGE_HEAD
    assert cli_outputs.SAELENS_FILES == saelens.SAE_FILES
    for name in ("manifest.json", "writer.lock", "shard_00042.npy",
                 "shard_00001.npy.123.0a1b2c3d.tmp", "manifest.json.9.deadbeef.tmp"):
        assert cli_outputs._STORE_FILE.match(name)
    assert _store_files._TEMPORARY.match("shard_00001.npy.123.0a1b2c3d.tmp")
    assert not cli_outputs._STORE_FILE.match("notes.txt")


# ------------------------------------------------------------ train and import
def test_train_replaces_its_out_only_with_overwrite(tmp_path, capsys):
    store = _store(tmp_path / "store",
                   np.random.default_rng(0).normal(size=(256, 8)).astype("float32"))
    (tmp_path / "sae.keras").write_text("mine")
    argv = ["train", "--store", store, "--out", str(tmp_path / "sae.keras"),
            "--latent-dim", "16", "--epochs", "1", "--batch-size", "64", "--quiet"]
    assert _fails(argv, capsys) == (
        f"gated-sae: error: `--out`: {tmp_path / 'sae.keras'} already exists. Pass "
        "--overwrite to replace it, or choose another name.")
    assert (tmp_path / "sae.keras").read_text() == "mine"
    _run(argv + ["--overwrite"], capsys)
    assert keras.saving.load_model(tmp_path / "sae.keras").latent_dim == 16
    assert _leftovers(tmp_path) == []


def test_import_replaces_its_model_only_with_overwrite(tmp_path, sae_file, capsys):
    _run(["export", sae_file, str(tmp_path / "folder")], capsys)
    (tmp_path / "copy.keras").write_text("mine")
    argv = ["import", str(tmp_path / "folder"), str(tmp_path / "copy.keras")]
    assert "copy.keras already exists. Pass --overwrite" in _fails(argv, capsys)
    assert (tmp_path / "copy.keras").read_text() == "mine"
    assert _run(argv + ["--overwrite"], capsys)["encoder"] == "TopKEncoder"
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_file(tmp_path):
    (tmp_path / "report.json").write_text("old")
    with pytest.raises(RuntimeError):
        with cli_outputs.replacing_file(tmp_path / "report.json", overwrite=True) as temporary:
            temporary.write_text("half")
            raise RuntimeError("disk full")
    assert (tmp_path / "report.json").read_text() == "old" and _leftovers(tmp_path) == []


# ------------------------------------------------------------ harvest
@pytest.fixture()
def net(tmp_path):
    x = keras.Input((4,))
    keras.Model(x, keras.layers.Identity(name="hidden")(x)).save(tmp_path / "net.keras")
    for name, rows in (("a.npy", 5), ("b.npy", 9)):
        np.save(tmp_path / name, np.full((rows, 4), rows, "float32"))
    return ["harvest", "--model", str(tmp_path / "net.keras"), "--layer", "hidden",
            "--dtype", "float32", "--shard-rows", "4", "--quiet", "--out",
            str(tmp_path / "store"), "--inputs"]


def test_harvest_replaces_a_store_only_with_overwrite(tmp_path, net, capsys):
    _run(net + [str(tmp_path / "a.npy")], capsys)
    assert "Pass --resume to continue it, --overwrite to replace it" in _fails(
        net + [str(tmp_path / "b.npy")], capsys)
    assert _run(net + [str(tmp_path / "b.npy"), "--overwrite"], capsys)["rows"] == 9
    store = ActivationStore.open(tmp_path / "store")
    np.testing.assert_array_equal(store.read_all(), np.full((9, 4), 9, "float32"))
    assert _leftovers(tmp_path) == []
    with pytest.raises(SystemExit):
        cli.main(net + [str(tmp_path / "b.npy"), "--overwrite", "--resume"])
    assert "not allowed with argument" in capsys.readouterr().err
    fresh = net[:-3] + ["--out", str(tmp_path / "fresh"), "--inputs", str(tmp_path / "a.npy")]
    assert _run(fresh + ["--overwrite"], capsys)["rows"] == 5  # nothing to replace


def test_harvest_never_deletes_what_it_did_not_write(tmp_path, net, capsys):
    _run(net + [str(tmp_path / "a.npy")], capsys)
    (tmp_path / "store" / "notes.txt").write_text("mine")
    assert "also holds files that are not the store's (notes.txt)" in _fails(
        net + [str(tmp_path / "b.npy"), "--overwrite"], capsys)
    assert ActivationStore.open(tmp_path / "store").num_rows == 5
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    argv = net[:-3] + ["--out", str(tmp_path / "other"), "--inputs", str(tmp_path / "a.npy")]
    assert "holds other files (notes.txt) and no store" in _fails(argv + ["--overwrite"],
                                                                  capsys)
    (tmp_path / "empty").mkdir()  # an empty folder is no output yet
    argv = net[:-3] + ["--out", str(tmp_path / "empty"), "--inputs", str(tmp_path / "a.npy")]
    assert _run(argv, capsys)["rows"] == 5


def test_harvest_does_not_replace_a_store_being_written(tmp_path, net, capsys):
    _run(net + [str(tmp_path / "a.npy")], capsys)
    descriptor = os.open(tmp_path / "store" / "writer.lock", os.O_RDWR)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert "Another process is writing the store" in _fails(
            net + [str(tmp_path / "b.npy"), "--overwrite"], capsys)
    finally:
        os.close(descriptor)
    assert ActivationStore.open(tmp_path / "store").num_rows == 5


def test_a_failed_overwrite_leaves_the_old_store(tmp_path, net, capsys, monkeypatch):
    from gated_sae_layers.cli import harvest as command

    _run(net + [str(tmp_path / "a.npy")], capsys)
    real = command.harvest

    def failing(*args, store=None, **kwargs):
        if store is not None:
            store.abandon()
            raise ValueError("the model failed half way")
        return real(*args, **kwargs)

    monkeypatch.setattr(command, "harvest", failing)
    assert _fails(net + [str(tmp_path / "b.npy"), "--overwrite"], capsys) == (
        "gated-sae: error: the model failed half way")
    np.testing.assert_array_equal(ActivationStore.open(tmp_path / "store").read_all(),
                                  np.full((5, 4), 5, "float32"))
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------ export
def test_export_replaces_an_sae_only_with_overwrite(tmp_path, sae_file, capsys):
    folder = tmp_path / "folder"
    _run(["export", sae_file, str(folder)], capsys)
    (folder / "README.md").write_text("mine")
    (folder / "sparsity.safetensors").write_bytes(b"of the old SAE")
    assert _fails(["export", sae_file, str(folder), "--dtype", "float16"], capsys) == (
        f"gated-sae: error: `FOLDER`: {folder} already holds cfg.json, "
        "sae_weights.safetensors, sparsity.safetensors. Pass --overwrite to replace them "
        "(other files there are left alone), or choose another folder.")
    assert json.loads((folder / "cfg.json").read_text())["dtype"] == "float32"
    printed = _run(["export", sae_file, str(folder), "--dtype", "float16", "--overwrite"],
                   capsys)
    assert printed["dtype"] == "float16"
    # The old SAE's sparsity file is gone with it; the user's file stays.
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "cfg.json", "sae_weights.safetensors"]


def test_save_sae_overwrites_only_when_asked(tmp_path):
    model = gsl.build_sae("topk", 4, 8, k=2)
    folder = saelens.save_sae(model, tmp_path, feature_density=np.full(8, 0.5))
    with pytest.raises(FileExistsError, match=r"already holds an SAE \(cfg.json, "
                       r"sae_weights.safetensors, sparsity.safetensors\)\. Pass "
                       r"`overwrite=True`"):
        saelens.save_sae(model, tmp_path)
    saelens.save_sae(model, tmp_path, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json",
                                                        "sae_weights.safetensors"]
    assert type(saelens.load_sae(folder).encoder).__name__ == "TopKEncoder"
    with pytest.raises(TypeError, match="`overwrite` must be True or False"):
        saelens.save_sae(model, tmp_path, overwrite="yes")


def test_a_failed_export_write_leaves_the_folder_as_it_was(tmp_path):
    (tmp_path / "cfg.json").write_text("old")
    with pytest.raises(TypeError):
        _checks.write_folder(tmp_path, {"cfg.json": b"new", "sae_weights.safetensors": None})
    assert (tmp_path / "cfg.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json"]


# ------------------------------------------------------------ evaluate and dashboard
def test_evaluate_replaces_its_json_only_with_overwrite(tmp_path, sae_file, capsys):
    store = _store(tmp_path / "store",
                   np.random.default_rng(0).normal(size=(64, 8)).astype("float32"))
    (tmp_path / "report.json").write_text("mine")
    argv = ["evaluate", sae_file, "--store", store, "--json", str(tmp_path / "report.json")]
    assert "report.json already exists. Pass --overwrite" in _fails(argv, capsys)
    assert (tmp_path / "report.json").read_text() == "mine"
    printed = _run(argv + ["--overwrite"], capsys)
    assert json.loads((tmp_path / "report.json").read_text())["fvu"] == printed["fvu"]
    assert _leftovers(tmp_path) == []


def test_dashboard_replaces_its_report_only_with_overwrite(tmp_path, sae_file, capsys):
    np.save(tmp_path / "x.npy",
            np.random.default_rng(0).normal(size=(64, 8)).astype("float32"))
    argv = ["dashboard", sae_file, "--activations", str(tmp_path / "x.npy"), "--out",
            str(tmp_path / "report"), "--num-latents", "2", "--quiet"]
    _run(argv, capsys)
    (tmp_path / "report" / "notes.txt").write_text("mine")
    assert "already holds index.html, summary.json. Pass --overwrite" in _fails(argv,
                                                                                 capsys)
    assert len(_run(argv[:-2] + ["3", "--quiet", "--overwrite"], capsys)["pages"]) == 3
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "index.html", "notes.txt", "summary.json"]
    (tmp_path / "report" / "index.html").write_text("my own page")
    assert "no feature dashboard wrote it; it is left untouched, even with --overwrite" \
        in _fails(argv + ["--overwrite"], capsys)
    assert (tmp_path / "report" / "index.html").read_text() == "my own page"
    assert _leftovers(tmp_path) == []


def test_check_output_dir_overwrites_only_when_asked(tmp_path):
    rid = output.new_report_id()
    (tmp_path / "index.html").write_text(output.PAGE_HEAD.format(report_id=rid))
    (tmp_path / "summary.json").write_text(
        json.dumps({"generator": output.MARKER, "report_id": rid}))
    with pytest.raises(FileExistsError, match=r"already holds a feature dashboard "
                       r"\(index.html, summary.json\)\. Pass `overwrite=True`"):
        output.check_output_dir(tmp_path)
    assert output.check_output_dir(tmp_path, overwrite=True) == tmp_path
    (tmp_path / "index.html").write_text("my own page")
    with pytest.raises(FileExistsError, match="which no feature dashboard wrote"):
        output.check_output_dir(tmp_path, overwrite=True)
    with pytest.raises(TypeError, match="`overwrite` must be True or False"):
        output.check_output_dir(tmp_path / "new", overwrite=1)


def test_a_dashboard_into_the_current_folder_or_failing(tmp_path, sae_file, capsys,
                                                       monkeypatch):
    np.save(tmp_path / "x.npy", np.ones((16, 8), "float32"))
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    _run(["dashboard", sae_file, "--activations", str(tmp_path / "x.npy"), "--out", ".",
          "--num-latents", "1", "--quiet"], capsys)
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == [
        "index.html", "summary.json"]

    def failing(*args, **kwargs):
        raise ValueError("the pass failed")

    monkeypatch.setattr("gated_sae_layers.cli.dashboard.feature_dashboard", failing)
    assert _fails(["dashboard", sae_file, "--activations", str(tmp_path / "x.npy"),
                   "--out", str(tmp_path / "report")], capsys).endswith("the pass failed")
    assert not (tmp_path / "report").exists()
