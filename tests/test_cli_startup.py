"""`gated-sae` starts at once: `--help` and every argument error import only the
standard library (no TensorFlow, Keras, JAX or numpy), answer in one line,
and TensorFlow's start-up log lines stay off the terminal."""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

import gated_sae_layers_cli
from gated_sae_layers_cli import main, parser
from gated_sae_layers_cli._native_logs import native_logs_filtered

ROOT = pathlib.Path(gated_sae_layers_cli.__file__).parent.parent
HEAVY = {"tensorflow", "keras", "jax", "jaxlib", "numpy", "gated_sae_layers", "keras_hub"}
# What the command line may import before a command runs, beyond what
# Python itself loads: the standard library and itself, and not much of it.
MAX_NEW_MODULES = 60

PROBE = """
import json, sys
before = set(sys.modules)
from gated_sae_layers_cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit_:
    status = exit_.code
print(json.dumps({"status": status, "modules": sorted(set(sys.modules) - before)}))
"""


def _probe(argv, env=None):
    """Runs `main(argv)` in a fresh Python; returns (status, new modules, stderr)."""
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["status"], report["modules"], result.stderr


def _outputs(tmp_path):
    """Files the early checks look at (none of them is read)."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "manifest.json").write_text("{}")
    (tmp_path / "sae.keras").write_text("")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "cfg.json").write_text("{}")
    return {name: str(tmp_path / name) for name in ("store", "sae.keras", "export")}


def _error_cases(tmp_path):
    paths = _outputs(tmp_path)
    store, sae, export = paths["store"], paths["sae.keras"], paths["export"]
    return {
        "bad value": ["train", "--store", store, "--out", "o.keras", "--epochs", "0"],
        "missing argument": ["harvest", "--model", "minilm"],
        "no command": [],
        "missing file": ["evaluate", str(tmp_path / "missing.keras"), "--store", store],
        "missing store": ["train", "--store", str(tmp_path / "nowhere"), "--out",
                          str(tmp_path / "new.keras")],
        "existing train output": ["train", "--store", store, "--out", sae],
        "existing store": ["harvest", "--model", "minilm", "--layer", "l", "--out", store],
        "existing export": ["export", sae, export],
        "existing import output": ["import", export, sae],
        "bad image shape": ["dashboard", sae, "--store", store, "--out",
                            str(tmp_path / "r"), "--image-shape", "28"],
    }


@pytest.mark.parametrize("argv", [["--help"]] + [[command, "--help"] for command in (
    "harvest", "train", "evaluate", "export", "import", "dashboard")])
def test_help_imports_only_the_standard_library(argv):
    status, modules, _ = _probe(argv)
    assert status == 0
    assert not {m.split(".")[0] for m in modules} & HEAVY, modules
    outside = [m for m in modules if m.split(".")[0] not in sys.stdlib_module_names
               and m.split(".")[0] != "gated_sae_layers_cli"]
    assert outside == [] and len(modules) <= MAX_NEW_MODULES, modules


def test_argument_errors_are_one_line_without_heavy_imports(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    for case, argv in _error_cases(tmp_path).items():
        status, modules, stderr = _probe(argv, env)
        assert status == 2, (case, stderr)
        assert not {m.split(".")[0] for m in modules} & HEAVY, (case, modules)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gated-sae: error: "), (case, stderr)


def test_the_error_line_comes_first_without_tensorflow_log_lines(tmp_path):
    """A user error found after TensorFlow started: stderr is that one line."""
    import keras
    import numpy as np

    x = keras.Input((10,))
    keras.Model(x, keras.layers.Dense(3, name="hidden")(x)).save(tmp_path / "net.keras")
    np.save(tmp_path / "x.npy", np.zeros((4, 12), "float32"))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-c", "from gated_sae_layers_cli import main; exit(main())",
         "harvest", "--model", str(tmp_path / "net.keras"), "--layer", "hidden",
         "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "store")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "gated-sae: error: `--inputs` must hold examples of shape (10,) for the model "
        f"{tmp_path / 'net.keras'} (its input shape is (None, 10)). Received: "
        f"{tmp_path / 'x.npy'} of shape (4, 12), examples of shape (12,)"]


def test_native_log_lines_are_dropped_and_the_rest_kept(capfd):
    with native_logs_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called "
                    b"are written to STDERR\n"
                    b"I0000 00:00:1796569609.537845   13732 cudart_stub.cc:31] Could not "
                    b"find cuda drivers on your machine, GPU will not be used.\n"
                    b"E0000 00:00:1796569609.5 13732 cuda_executor.cc:1001] failed call to "
                    b"cuInit: UNKNOWN ERROR (303)\n"
                    b"2024-05-01 10:00:00.123456: I tensorflow/core/util/port.cc:113] "
                    b"oneDNN custom operations are on.\n"
                    b"UserWarning: something worth seeing\n")
    assert capfd.readouterr().err == "UserWarning: something worth seeing\n"


def test_tensorflow_logs_are_quieted_unless_debug_or_chosen(tmp_path, monkeypatch, capsys):
    argv = ["train", "--store", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o.keras")]
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    assert main(argv) == 2 and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    with pytest.raises(FileNotFoundError):
        main(argv + ["--debug"])
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    assert main(argv) == 2 and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    capsys.readouterr()


def _commands():
    top = parser()
    (choices,) = [a.choices for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return choices


def test_help_shows_every_default():
    for name, command in _commands().items():
        formatter = command.formatter_class(prog=command.prog)
        for action in command._actions:
            if (action.option_strings and action.nargs != 0 and not action.required
                    and action.help is not argparse.SUPPRESS):
                text = formatter._get_help_string(action)
                assert "(default" in text, (name, action.option_strings)
    help_text = _commands()["train"].format_help()
    assert "~2% of\n--latent-dim" in help_text or "~2% of --latent-dim" in help_text
    assert "(default: 2% of --latent-dim, rounded, at least 1" in " ".join(help_text.split())


def test_the_console_script_is_the_fast_entry_point():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gated-sae"] == "gated_sae_layers_cli:main"
