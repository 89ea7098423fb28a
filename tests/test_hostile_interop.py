"""Hostile inputs to SAE folders and to the commands that read and write them
(issue 20): an output that is an input, padded and sparse weights files,
values beyond the model's dtype, stale or half-written exports, deeply
nested JSON. Each is refused with a `ValueError` (or `FileExistsError`)
naming the file and the problem, and on the command line with one line and
exit status 2, before anything is written."""

import errno
import json
import os
import pathlib
import resource
import signal
import struct
import tracemalloc

import numpy as np
import pytest

import gated_sae_layers as gsl
import gated_sae_layers_cli as cli
from gated_sae_layers.activations import ActivationStore
from gated_sae_layers.interop import load_feature_density, load_sae, save_sae
from gated_sae_layers.interop._safetensors import read_safetensors
from gated_sae_layers_cli import outputs as cli_outputs

safetensors_numpy = pytest.importorskip("safetensors.numpy")

WEIGHTS = "sae_weights.safetensors"


def _fails(argv, capsys):
    """Runs `gated-sae argv`: exit status 2 and one line on stderr, returned."""
    capsys.readouterr()
    assert cli.main([str(arg) for arg in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gated-sae: error: "), err
    return err


def _runs(argv, capsys):
    capsys.readouterr()
    assert cli.main([str(arg) for arg in argv]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _topk(d_in=4, d_sae=8, seed=0):
    model = gsl.build_sae("topk", d_in, d_sae, k=2)
    rng = np.random.default_rng(seed)
    model.encoder.input_kernel.assign(rng.normal(size=(d_in, d_sae)).astype("float32"))
    return model


def _snapshot(folder):
    """`{name: bytes}` of every entry in `folder` (None for a folder)."""
    return {p.name: (p.read_bytes() if p.is_file() else None)
            for p in sorted(pathlib.Path(folder).iterdir())}


def _hidden(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir() if p.name.startswith("."))


@pytest.fixture()
def sae_file(tmp_path):
    path = tmp_path / "sae.keras"
    _topk().save(path)
    return path


@pytest.fixture()
def store(tmp_path):
    store = ActivationStore.create(tmp_path / "store", 4, "float32", shard_rows=64)
    store.append(np.random.default_rng(0).normal(size=(32, 4)).astype("float32"))
    store.close()
    return tmp_path / "store"


# ------------------------------------------------- 1. an output is never an input
def test_evaluate_refuses_to_write_its_report_over_an_input(tmp_path, sae_file, store,
                                                           capsys):
    model_bytes, store_files = sae_file.read_bytes(), _snapshot(store)
    np.save(tmp_path / "labels.npy", np.zeros(32, "int64"))
    evaluate = ["evaluate", sae_file, "--store", store, "--overwrite"]
    err = _fails(evaluate + ["--json", sae_file], capsys)
    assert err == (f"gated-sae: error: `--json` must not be an input of the command: "
                   f"{sae_file} is MODEL.keras, which it reads. Choose another path. "
                   f"Received: --json={sae_file}")
    for out in (store / "manifest.json", store / "report.json"):
        assert f"`--json` must not be inside --store ({store})" in _fails(
            evaluate + ["--json", out], capsys)
    assert "is --labels, which it reads" in _fails(
        evaluate + ["--labels", tmp_path / "labels.npy", "--json",
                    tmp_path / "labels.npy"], capsys)
    assert "`--log-dir` must not be inside --store" in _fails(
        evaluate + ["--log-dir", store / "logs"], capsys)
    (tmp_path / "link.json").symlink_to(sae_file)   # the same file by another name
    assert "is MODEL.keras, which it reads" in _fails(
        evaluate + ["--json", tmp_path / "link.json"], capsys)
    assert sae_file.read_bytes() == model_bytes and _snapshot(store) == store_files


def test_export_and_import_refuse_an_output_that_is_an_input(tmp_path, sae_file, capsys):
    folder = tmp_path / "folder"
    _runs(["export", sae_file, folder], capsys)
    # The folder's cfg.json is the model itself (a hard link): replacing it
    # would be writing over what the command reads.
    os.link(sae_file, tmp_path / "hard.keras")
    (folder / "cfg.json").unlink()
    os.link(sae_file, folder / "cfg.json")
    assert "`FOLDER` must not be an input of the command" in _fails(
        ["export", tmp_path / "hard.keras", folder, "--overwrite"], capsys)
    assert "`FOLDER` must be a folder" in _fails(
        ["export", sae_file, sae_file, "--overwrite"], capsys)
    _runs(["export", sae_file, tmp_path / "second"], capsys)
    (tmp_path / "mirror.keras").symlink_to(tmp_path / "second" / WEIGHTS)
    err = _fails(["import", tmp_path / "second", tmp_path / "mirror.keras",
                  "--overwrite"], capsys)
    assert "`MODEL.keras` must not be an input of the command" in err
    assert (tmp_path / "mirror.keras").is_symlink()


def test_the_rule_for_train_dashboard_and_harvest(tmp_path, sae_file, store):
    """The shared check, as `train`, `dashboard` and `harvest` call it."""
    with pytest.raises(ValueError, match=r"`--out` must not be inside --store"):
        cli_outputs.check_not_an_input("--out", store / "sae.keras", {"--store": store})
    with pytest.raises(ValueError, match=r"`--out` must not be inside --store"):
        cli_outputs.check_not_an_input("--out", store, {"--store": store},
                                    names=("index.html", "summary.json"))
    with pytest.raises(ValueError, match=r"is MODEL.keras, which it reads"):
        cli_outputs.check_not_an_input("--out", tmp_path, {"MODEL.keras": sae_file},
                                    names=("sae.keras",))
    # A report folder beside the model, or holding it, is fine: only its two
    # files are written.
    cli_outputs.check_not_an_input("--out", tmp_path, {"MODEL.keras": sae_file},
                                names=("index.html", "summary.json"))
    # A store replaced whole (names=None) must not hold an input.
    with pytest.raises(ValueError, match=r"`--out` would replace the folder that holds "
                       r"--inputs"):
        cli_outputs.check_not_an_input("--out", store, {"--inputs": store / "x.npy"})
    cli_outputs.check_not_an_input("--out", tmp_path / "new", {"--inputs": sae_file})


def _cli_argv(tmp_path, sae_file, store):
    return {
        "train": ["train", "--store", store, "--out", store / "sae.keras",
                  "--latent-dim", "8", "--epochs", "1", "--quiet"],
        "dashboard": ["dashboard", sae_file, "--store", store, "--out", store,
                      "--num-latents", "1", "--quiet"],
        "harvest": ["harvest", "--model", sae_file, "--layer", "x", "--inputs",
                    store / "shard_00000.npy", "--out", store, "--overwrite"],
    }


@pytest.mark.parametrize("command", ["train", "dashboard", "harvest"])
def test_train_dashboard_and_harvest_refuse_an_output_that_is_an_input(
        tmp_path, sae_file, store, capsys, command):
    before = _snapshot(store)
    err = _fails(_cli_argv(tmp_path, sae_file, store)[command], capsys)
    assert "must not be inside --store" in err or "would replace the folder" in err, err
    assert _snapshot(store) == before


# ------------------------------------------------- 2. padded or sparse weights
def _peak_while(function):
    tracemalloc.start()
    try:
        function()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_padded_weights_file_is_refused_before_it_is_read(tmp_path, capsys):
    folder = save_sae(_topk(), tmp_path / "sae")
    with open(folder / WEIGHTS, "r+b") as handle:
        handle.truncate(2**30)   # sparse: no disk, but 1 GiB if read
    message = r"sae_weights.safetensors: \d+ bytes after the last tensor"

    def load():
        with pytest.raises(ValueError, match=message):
            load_sae(folder)

    assert _peak_while(load) < 2**30 / 64
    err = _fails(["import", folder, tmp_path / "out.keras"], capsys)
    assert "bytes after the last tensor" in err and not (tmp_path / "out.keras").exists()


def test_a_header_that_disagrees_with_the_config_is_refused_before_reading(tmp_path):
    folder = save_sae(_topk(), tmp_path / "sae")
    tensors = read_safetensors(folder, WEIGHTS)
    header, offset = {}, 0   # W_enc claims 1 GiB; the file is that long (sparse)
    shapes = {**{name: list(value.shape) for name, value in tensors.items()},
              "W_enc": [4, 2**26]}
    for name, shape in shapes.items():
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    with open(folder / WEIGHTS, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        handle.truncate(8 + len(text) + offset)

    def load():
        with pytest.raises(ValueError, match=r"tensor 'W_enc' has shape \(4, 67108864\); "
                           r"expected \(4, 8\)"):
            load_sae(folder)

    assert _peak_while(load) < 2**30 / 64


def test_a_huge_header_length_is_refused(tmp_path):
    folder = save_sae(_topk(), tmp_path / "sae")
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(ValueError, match="truncated or corrupt safetensors file"):
        load_sae(folder)


# ------------------------------------------------- 3. beyond float32's range
def _rewrite(folder, change, dtype="float64"):
    tensors = {k: np.array(v, dtype=dtype) for k, v in
               read_safetensors(folder, WEIGHTS).items()}
    change(tensors)
    (folder / WEIGHTS).write_bytes(safetensors_numpy.save(tensors))


def test_float64_weights_beyond_float32_are_refused(tmp_path, capsys):
    folder = save_sae(_topk(), tmp_path / "sae", dtype="float64")
    _rewrite(folder, lambda t: t["W_enc"].__setitem__((1, 2), -1e300))
    with pytest.raises(ValueError, match=r"sae_weights.safetensors: tensor 'W_enc' holds "
                       r"values beyond float32's range \(largest magnitude 1e\+300\)"):
        load_sae(folder)
    err = _fails(["import", folder, tmp_path / "out.keras"], capsys)
    assert "tensor 'W_enc' holds values beyond float32's range" in err


def test_a_fold_that_overflows_float32_is_refused(tmp_path):
    folder = save_sae(_topk(), tmp_path / "sae", dtype="float64")
    _rewrite(folder, lambda t: (t["W_enc"].__setitem__((0, 0), 1e30),
                                t["b_dec"].__setitem__(0, 1e30)))
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "apply_b_dec_to_input": False}))
    with pytest.raises(ValueError, match=r"tensor 'b_enc' holds values beyond float32"):
        load_sae(folder)


# ------------------------------------------------- 4. no stale sparsity file
def test_an_overwritten_export_keeps_no_old_sparsity(tmp_path, capsys):
    folder = tmp_path / "sae"
    save_sae(_topk(), folder, feature_density=np.full(8, 0.25))
    save_sae(_topk(seed=1), folder, overwrite=True)      # same d_sae
    assert load_feature_density(folder) is None
    save_sae(_topk(), folder, feature_density=np.full(8, 0.25), overwrite=True)
    save_sae(_topk(d_sae=16), folder, overwrite=True)    # another d_sae
    assert load_sae(folder).latent_dim == 16 and load_feature_density(folder) is None
    # A sparsity file alone is an SAE file too: refused without overwrite.
    (folder / "cfg.json").unlink()
    (folder / WEIGHTS).unlink()
    (folder / "sparsity.safetensors").write_bytes(b"of an older SAE")
    with pytest.raises(FileExistsError, match=r"already holds an SAE "
                       r"\(sparsity.safetensors\)"):
        save_sae(_topk(), folder)
    # The command line: the same rule.
    _topk().save(tmp_path / "sae.keras")
    assert "already holds sparsity.safetensors" in _fails(
        ["export", tmp_path / "sae.keras", folder], capsys)
    _runs(["export", tmp_path / "sae.keras", folder, "--overwrite"], capsys)
    assert load_feature_density(folder) is None and load_sae(folder).latent_dim == 8


def test_a_sparsity_folder_is_not_deleted(tmp_path):
    (tmp_path / "sparsity.safetensors").mkdir()
    with pytest.raises(FileExistsError, match="not a file"):
        save_sae(_topk(), tmp_path, overwrite=True)
    assert (tmp_path / "sparsity.safetensors").is_dir()


# ------------------------------------------------- 5. float16 overflow
def test_float16_export_refuses_weights_beyond_its_range(tmp_path, capsys):
    model = _topk()
    model.encoder.input_kernel.assign(
        np.where(np.eye(4, 8) > 0, -7e4, 0.5).astype("float32"))
    with pytest.raises(ValueError, match=r"`dtype='float16'` cannot hold tensor 'W_enc': "
                       r"its largest magnitude is 7e\+04, beyond float16's 65504. Export "
                       r"as float32 or bfloat16. Received: dtype='float16'"):
        save_sae(model, tmp_path / "sae", dtype="float16")
    assert not (tmp_path / "sae").exists()
    model.save(tmp_path / "big.keras")
    assert "cannot hold tensor 'W_enc'" in _fails(
        ["export", tmp_path / "big.keras", tmp_path / "sae", "--dtype", "float16"], capsys)
    assert not (tmp_path / "sae").exists()
    save_sae(model, tmp_path / "sae", dtype="bfloat16")   # bfloat16 holds it
    assert np.isclose(np.abs(read_safetensors(tmp_path / "sae", WEIGHTS)["W_enc"]).max(),
                      7e4, rtol=1e-2)


# ------------------------------------------------- 7. all or nothing
def _failing_at(monkeypatch, n):
    """Makes the `n`-th call of `os.rename` or `os.replace` fail, once."""
    calls = [0]

    def wrap(original):
        def failing(*args, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                raise OSError(errno.EIO, "injected failure")
            return original(*args, **kwargs)
        return failing

    monkeypatch.setattr(os, "rename", wrap(os.rename))
    monkeypatch.setattr(os, "replace", wrap(os.replace))
    return calls


@pytest.mark.parametrize("existing", [True, False], ids=["overwrite", "new folder"])
def test_an_export_failing_at_any_rename_changes_nothing(tmp_path, monkeypatch,
                                                        existing):
    old, new = _topk(), _topk(d_sae=16)

    def prepare(parent):
        parent.mkdir()
        if existing:
            save_sae(old, parent / "sae", feature_density=np.full(8, 0.25))
            (parent / "sae" / "notes.txt").write_text("mine")
        return parent / "sae"

    probe = prepare(tmp_path / "probe")
    with monkeypatch.context() as patch:
        calls = _failing_at(patch, 0)
        save_sae(new, probe, overwrite=True)
        renames = calls[0]
    assert renames >= 1 and load_sae(probe).latent_dim == 16
    folder = prepare(tmp_path / "parent")
    before = _snapshot(folder) if existing else None
    for n in range(1, renames + 1):
        with monkeypatch.context() as patch:
            _failing_at(patch, n)
            with pytest.raises(OSError, match="injected failure"):
                save_sae(new, folder, overwrite=True)
        if existing:
            assert _snapshot(folder) == before and _hidden(folder) == [], n
        assert sorted(p.name for p in folder.parent.iterdir()) == (
            ["sae"] if existing else []), n
    if existing:
        assert load_sae(folder).latent_dim == 8
        np.testing.assert_allclose(load_feature_density(folder), 0.25, rtol=1e-5)


def test_a_failed_export_command_changes_nothing(tmp_path, sae_file, capsys,
                                                monkeypatch):
    folder = tmp_path / "folder"
    save_sae(_topk(d_sae=16), folder, feature_density=np.full(16, 0.25))
    before = _snapshot(folder)
    _failing_at(monkeypatch, 2)
    assert _fails(["export", sae_file, folder, "--overwrite"], capsys).endswith(
        "injected failure")
    assert _snapshot(folder) == before and _hidden(folder) == []


def test_an_export_failing_while_writing_changes_nothing(tmp_path):
    """A full disk halfway through the weights (a file size limit, so the
    write itself fails)."""
    folder = tmp_path / "sae"
    save_sae(_topk(), folder, feature_density=np.full(8, 0.25))
    before = _snapshot(folder)
    bigger = _topk(d_in=64, d_sae=256)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limit[1]))
    try:
        with pytest.raises(OSError) as raised:
            save_sae(bigger, folder, overwrite=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert raised.value.errno == errno.EFBIG
    assert _snapshot(folder) == before and _hidden(folder) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]


# ------------------------------------------------- 8. deeply nested JSON
DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_cfg_is_a_value_error(tmp_path, capsys):
    folder = save_sae(_topk(), tmp_path / "sae")
    (folder / "cfg.json").write_text(DEEP)
    with pytest.raises(ValueError, match=r"cfg.json: not valid JSON \(nested too deeply"):
        load_sae(folder)
    assert "cfg.json: not valid JSON (nested too deeply" in _fails(
        ["import", folder, tmp_path / "out.keras"], capsys)


def test_deeply_nested_safetensors_header_is_a_value_error(tmp_path, capsys):
    folder = save_sae(_topk(), tmp_path / "sae")
    header = ('{"W_enc": ' + DEEP + "}").encode()
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ValueError, match=r"sae_weights.safetensors: corrupt safetensors "
                       r"header \(nested too deeply"):
        load_sae(folder)
    assert "corrupt safetensors header (nested too deeply" in _fails(
        ["import", folder, tmp_path / "out.keras"], capsys)
