"""Transcoder folders: SAELens's four transcoders both ways, sparsify's in; no torch.

The fixtures `tests/fixtures/saelens/<kind>/` (`transcoder`, `skip_transcoder`,
`jumprelu_transcoder`, `jumprelu_skip_transcoder`) and
`tests/fixtures/sparsify/<kind>/` (`transcoder`, `skip_transcoder`) were
written by the real sae-lens 6.54 and eai-sparsify 1.3.3, with their inputs
and the peers' own outputs (`SAELENS_WRITE_FIXTURES=1 python -m pytest
tests/test_transcoder_proof.py -n 0`, which also proves the other direction
in SAELens itself). Here: the fixtures load and reproduce those outputs; our
exports hold exactly the tensors, shapes and config keys of SAELens's own
folders, compute SAELens's formula (in numpy), and come back bit for bit;
what SAELens has no transcoder for is refused before anything is written;
tampered transcoder folders are refused naming the file and the problem.
"""

import json
import pathlib
import shutil
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import gated_sae_layers as gsl
from gated_sae_layers.interop import load_sae, load_sparsify, save_sae
from gated_sae_layers.interop._safetensors import read_safetensors
from tests.helpers_proof import quiet_load

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SAELENS_KINDS = ("transcoder", "skip_transcoder", "jumprelu_transcoder",
                 "jumprelu_skip_transcoder")
SPARSIFY_KINDS = ("transcoder", "skip_transcoder")
WEIGHTS = "sae_weights.safetensors"
D_IN, D_OUT, D_SAE = 5, 3, 8
EXPORTS = {   # our architecture: (builder arguments, SAELens transcoder without skip)
    "relu": ({"sparsity_coefficient": 0.3}, "transcoder"),
    "jumprelu": ({"sparsity_coefficient": 0.3, "bandwidth": 0.01},
                 "jumprelu_transcoder"),
    "batch_topk": ({"k": 2, "threshold_momentum": 0.9}, "jumprelu_transcoder"),
    "matryoshka": ({"k": 2, "prefix_sizes": [3]}, "jumprelu_transcoder"),
}


def _random_transcoder(architecture, skip, seed, **overrides):
    """A transcoder of `EXPORTS` with random weights, unit decoder rows, a
    random skip and a positive threshold."""
    kwargs = {**EXPORTS[architecture][0], **overrides}
    model = gsl.build_transcoder(architecture, D_IN, D_OUT, D_SAE, skip=skip, **kwargs)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0, 0.5, size=variable.shape).astype("float32"))
    kernel = rng.normal(size=(D_SAE, D_OUT))
    model.decoder.kernel.assign(
        (kernel / np.linalg.norm(kernel, axis=1, keepdims=True)).astype("float32"))
    if architecture in ("batch_topk", "matryoshka"):
        model.encoder.inference_threshold.assign(float(rng.uniform(0.05, 0.5)))
    return model


def _inputs(rows=12, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, D_IN)).astype("float32")


def _saelens_forward(tensors, x):
    """SAELens's transcoder `forward` (`sae_lens/saes/transcoder.py`) in numpy:
    `act(x W_enc + b_enc) W_dec + b_dec (+ x W_skip^T)`, float64."""
    pre = x.astype("float64") @ tensors["W_enc"] + tensors["b_enc"]
    latents = np.maximum(pre, 0.0)
    if "threshold" in tensors:
        latents = latents * (pre > tensors["threshold"])
    output = latents @ tensors["W_dec"] + tensors["b_dec"]
    if "W_skip" in tensors:
        output = output + x @ tensors["W_skip"].T
    return latents, output


def _tensors(folder, name=WEIGHTS):
    return {key: value.astype("float64") for key, value in
            read_safetensors(pathlib.Path(folder), name).items()}


def _check_reproduces_fixture(model, folder):
    """`model` gives the peer's own outputs on the fixture's inputs; returns its cfg."""
    x = np.load(folder / "inputs.npy")
    outputs = model.predict_on_batch(x)
    np.testing.assert_allclose(outputs["reconstruction"],
                               np.load(folder / "expected_reconstruction.npy"), atol=1e-5)
    np.testing.assert_allclose(outputs["latents"],
                               np.load(folder / "expected_latents.npy"), atol=1e-5)
    return json.loads((folder / "cfg.json").read_text())


# ------------------------------------------------------- SAELens's folders in
@pytest.mark.parametrize("kind", SAELENS_KINDS)
def test_saelens_fixture_loads_as_our_transcoder(kind):
    folder = FIXTURES / "saelens" / kind
    model = quiet_load(folder)
    cfg = _check_reproduces_fixture(model, folder)
    assert model.is_transcoder
    assert (model.input_dim, model.output_dim, model.latent_dim) == (
        cfg["d_in"], cfg["d_out"], cfg["d_sae"])
    expected_encoder = gsl.JumpReLUEncoder if "jumprelu" in kind else gsl.ReLUEncoder
    assert type(model.encoder) is expected_encoder
    assert model.architecture["arguments"]["skip"] == ("skip" in kind)
    assert model.architecture["arguments"]["output_dim"] == cfg["d_out"]


def test_saelens_skip_is_our_skip_kernel_transposed():
    folder = FIXTURES / "saelens" / "skip_transcoder"
    model = quiet_load(folder)
    np.testing.assert_array_equal(ops.convert_to_numpy(model.get_layer("skip").kernel),
                                  _tensors(folder)["W_skip"].T.astype("float32"))


def test_relu_transcoder_loads_with_free_decoder_rows():
    """SAELens `transcoder` loads as ReLU with `weight_by_decoder_norm=True`, as
    `standard` does: no unit-norm constraint, so no warning; JumpReLU warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_sae(FIXTURES / "saelens" / "transcoder")
    assert model.architecture["arguments"]["weight_by_decoder_norm"] is True
    assert model.sparsity_coefficient == 0.0
    with pytest.warns(UserWarning, match="not unit norm.*loaded jumprelu transcoder"):
        load_sae(FIXTURES / "saelens" / "jumprelu_transcoder")


def test_loaded_transcoder_trains_on_pairs_and_round_trips_keras(tmp_path):
    model = quiet_load(FIXTURES / "saelens" / "skip_transcoder")
    model.set_sparsity_coefficient(0.01)
    x = np.load(FIXTURES / "saelens" / "skip_transcoder" / "inputs.npy")
    y = np.load(FIXTURES / "saelens" / "skip_transcoder" / "expected_reconstruction.npy")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    model.save(tmp_path / "transcoder.keras")
    reloaded = keras.saving.load_model(tmp_path / "transcoder.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict_on_batch(x)["reconstruction"],
                               model.predict_on_batch(x)["reconstruction"], atol=1e-6)


@pytest.mark.parametrize("kind", SAELENS_KINDS)
def test_saelens_fixture_round_trips_through_our_export(tmp_path, kind):
    """SAELens -> ours -> SAELens: the same config layout and tensor names and
    shapes as SAELens wrote, and its forward (numpy) unchanged; the decoder
    rows come out unit norm (the fold of `save_sae`)."""
    source = FIXTURES / "saelens" / kind
    folder = save_sae(quiet_load(source), tmp_path / "out")
    theirs, ours = _tensors(source), _tensors(folder)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    cfg = json.loads((folder / "cfg.json").read_text())
    saelens_cfg = json.loads((source / "cfg.json").read_text())
    assert set(saelens_cfg) <= set(cfg)
    for key in ("architecture", "d_in", "d_sae", "d_out", "apply_b_dec_to_input",
                "normalize_activations", "reshape_activations"):
        assert cfg[key] == saelens_cfg[key], key
    x = np.load(source / "inputs.npy")
    np.testing.assert_allclose(_saelens_forward(ours, x)[1],
                               np.load(source / "expected_reconstruction.npy"), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours["W_dec"], axis=1), 1.0, rtol=1e-6)


# ---------------------------------------------------------- our exports out
@pytest.mark.parametrize("architecture", sorted(EXPORTS))
@pytest.mark.parametrize("skip", [False, True])
def test_export_is_saelens_transcoder_and_comes_back_exact(tmp_path, architecture,
                                                           skip):
    model = _random_transcoder(architecture, skip, seed=3)
    first = save_sae(model, tmp_path / "a")
    cfg = json.loads((first / "cfg.json").read_text())
    kind = EXPORTS[architecture][1]
    if skip:
        kind = kind.replace("transcoder", "skip_transcoder")
    assert cfg["architecture"] == kind
    assert (cfg["d_in"], cfg["d_sae"], cfg["d_out"]) == (D_IN, D_SAE, D_OUT)
    assert cfg["apply_b_dec_to_input"] is False
    tensors = _tensors(first)
    expected = {"W_enc": (D_IN, D_SAE), "b_enc": (D_SAE,), "W_dec": (D_SAE, D_OUT),
                "b_dec": (D_OUT,)}
    if "jumprelu" in kind:
        expected["threshold"] = (D_SAE,)
    if skip:
        expected["W_skip"] = (D_OUT, D_IN)
    assert {k: v.shape for k, v in tensors.items()} == expected
    x = _inputs()
    outputs = model.predict_on_batch(x)
    latents, reconstruction = _saelens_forward(tensors, x)
    np.testing.assert_allclose(outputs["reconstruction"], reconstruction, atol=1e-5)
    np.testing.assert_allclose(outputs["latents"], latents, atol=1e-5)
    loaded = load_sae(first)
    recorded, back = model.architecture["arguments"], loaded.architecture["arguments"]
    assert loaded.architecture["name"] == architecture and back.keys() == recorded.keys()
    for key, value in recorded.items():
        assert back[key] == pytest.approx(value), key   # the coefficient, as float32
    assert type(loaded.encoder) is type(model.encoder)
    second = save_sae(loaded, tmp_path / "b")
    for name, value in _tensors(second).items():
        np.testing.assert_array_equal(value, tensors[name], err_msg=name)
    np.testing.assert_array_equal(loaded.predict_on_batch(x)["reconstruction"],
                                  outputs["reconstruction"])


def test_export_folds_scale_and_free_decoder_rows(tmp_path):
    """A skip transcoder trained on `(s x, s y)` with free rows: raw units out,
    unit rows, the skip unchanged (it is linear in `x` and `y` alike)."""
    model = gsl.build_transcoder("relu", D_IN, D_OUT, D_SAE, skip=True,
                                 sparsity_coefficient=0.3, weight_by_decoder_norm=True)
    rng = np.random.default_rng(1)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0, 0.5, size=variable.shape).astype("float32"))
    model.normalization_scale = 2.0
    folder = save_sae(model, tmp_path)
    info = json.loads((folder / "cfg.json").read_text())["metadata"]["gated_sae_layers"]
    assert info["normalization_scale"] == 2.0 and info["decoder_norms_folded"]
    tensors = _tensors(folder)
    np.testing.assert_allclose(np.linalg.norm(tensors["W_dec"], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        tensors["W_skip"], ops.convert_to_numpy(model.get_layer("skip").kernel).T)
    x = _inputs()
    raw = load_sae(folder).predict_on_batch(x)["reconstruction"]
    scaled = model.predict_on_batch(2.0 * x)["reconstruction"] / 2.0
    np.testing.assert_allclose(raw, scaled, atol=1e-5)
    np.testing.assert_allclose(_saelens_forward(tensors, x)[1], scaled, atol=1e-5)


@pytest.mark.parametrize("architecture, kwargs", [
    ("topk", {"k": 2}), ("gated", {"sparsity_coefficient": 0.1})])
def test_transcoders_saelens_lacks_are_refused_before_writing(tmp_path, architecture,
                                                              kwargs):
    model = gsl.build_transcoder(architecture, D_IN, D_OUT, D_SAE, skip=True, **kwargs)
    with pytest.raises(TypeError, match=(
            rf"Cannot export a '{architecture}' transcoder: SAELens 6.x has ReLU and "
            r"JumpReLU transcoders only \(jumprelu_skip_transcoder, jumprelu_transcoder, "
            r"skip_transcoder, transcoder\).*relu, batch_topk, jumprelu, matryoshka")):
        save_sae(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_untrained_batch_topk_transcoder_is_refused(tmp_path):
    model = gsl.build_transcoder("batch_topk", D_IN, D_OUT, D_SAE, k=2)
    with pytest.raises(ValueError, match="A batch_topk transcoder exports as JumpReLU"):
        save_sae(model, tmp_path)


# -------------------------------------------------------------- sparsify in
@pytest.mark.parametrize("kind", SPARSIFY_KINDS)
def test_sparsify_fixture_loads_as_our_topk_transcoder(kind):
    folder = FIXTURES / "sparsify" / kind
    # Our k-sparse transcoders train with free decoder rows, as sparsify's do:
    # its rows load as they are, with nothing to renormalize (no warning).
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = load_sae(folder)
    assert model.decoder.kernel_constraint is None
    cfg = _check_reproduces_fixture(model, folder)
    assert type(model.encoder) is gsl.TopKEncoder and model.is_transcoder
    assert model.architecture["arguments"]["k"] == cfg["k"]
    assert model.architecture["arguments"]["skip"] == cfg["skip_connection"]
    if cfg["skip_connection"]:
        np.testing.assert_array_equal(
            ops.convert_to_numpy(model.get_layer("skip").kernel),
            _tensors(folder, "sae.safetensors")["W_skip"].T.astype("float32"))


def _sparsify_copy(tmp_path, kind, change_cfg=None, change_tensors=None):
    folder = pathlib.Path(shutil.copytree(FIXTURES / "sparsify" / kind, tmp_path / kind))
    if change_cfg:
        cfg = json.loads((folder / "cfg.json").read_text())
        change_cfg(cfg)
        (folder / "cfg.json").write_text(json.dumps(cfg))
    if change_tensors:
        tensors = read_safetensors(folder, "sae.safetensors")
        change_tensors(tensors)
        (folder / "sae.safetensors").write_bytes(safetensors_numpy.save(tensors))
    return folder


SPARSIFY_TAMPERINGS = {
    "skip without transcode": (
        "skip_transcoder", lambda c: c.update(transcode=False), None,
        r"cfg.json: `skip_connection` is true and `transcode` false.*no equivalent"),
    "skip flag without W_skip": (
        "skip_transcoder", None, lambda t: t.pop("W_skip"),
        r"sae.safetensors: missing tensor\(s\) \['W_skip'\]"),
    "W_skip without the flag": (
        "skip_transcoder", lambda c: c.update(skip_connection=False), None,
        r"sae.safetensors: unexpected tensor\(s\) \['W_skip'\]"),
    "W_skip of another width": (
        "skip_transcoder", None, lambda t: t.update(W_skip=t["W_skip"][:, :5]),
        r"tensor 'W_skip' has shape \(8, 5\); expected \(8, 8\)"),
    "groupmax": ("transcoder", lambda c: c.update(activation="groupmax"), None,
                 r"`activation` must be one of \['topk'\]"),
    "transcode not a bool": ("transcoder", lambda c: c.update(transcode="yes"), None,
                             r"`transcode` must be true or false"),
}


@pytest.mark.parametrize("tampering", sorted(SPARSIFY_TAMPERINGS))
def test_tampered_sparsify_transcoder_is_refused(tmp_path, tampering):
    kind, change_cfg, change_tensors, message = SPARSIFY_TAMPERINGS[tampering]
    folder = _sparsify_copy(tmp_path, kind, change_cfg, change_tensors)
    with pytest.raises(ValueError, match=message):
        load_sparsify(folder)


# --------------------------------------------------------------- tampering
def _saelens_copy(tmp_path, kind):
    return pathlib.Path(shutil.copytree(FIXTURES / "saelens" / kind, tmp_path / kind))


def _edit_cfg(folder, change):
    cfg = json.loads((folder / "cfg.json").read_text())
    change(cfg)
    (folder / "cfg.json").write_text(json.dumps(cfg))


def _rewrite(folder, change):
    tensors = read_safetensors(folder, WEIGHTS)
    change(tensors)
    (folder / WEIGHTS).write_bytes(safetensors_numpy.save(tensors))


def _symlink_weights(folder):
    (folder / WEIGHTS).rename(folder.parent / "elsewhere.safetensors")
    (folder / WEIGHTS).symlink_to(folder.parent / "elsewhere.safetensors")


TAMPERINGS = {
    "apply_b_dec_to_input": (
        "transcoder", lambda f: _edit_cfg(f, lambda c: c.update(apply_b_dec_to_input=True)),
        r"cfg.json: `apply_b_dec_to_input` is true for a SAELens transcoder; .*uncentered"),
    "missing d_out": (
        "skip_transcoder", lambda f: _edit_cfg(f, lambda c: c.pop("d_out")),
        r"cfg.json: `d_out` must be an integer >= 1. Received: d_out=None"),
    "d_out not the tensors'": (
        "transcoder", lambda f: _edit_cfg(f, lambda c: c.update(d_out=8)),
        r"tensor 'W_dec' has shape \(16, 6\); expected \(16, 8\) \(from the config\)"),
    "missing W_skip": (
        "jumprelu_skip_transcoder", lambda f: _rewrite(f, lambda t: t.pop("W_skip")),
        r"sae_weights.safetensors: missing tensor\(s\) \['W_skip'\]"),
    "W_skip in a plain transcoder": (
        "jumprelu_transcoder",
        lambda f: _rewrite(f, lambda t: t.update(W_skip=np.zeros((6, 8), "float32"))),
        r"sae_weights.safetensors: unexpected tensor\(s\) \['W_skip'\]"),
    "W_skip transposed": (
        "skip_transcoder", lambda f: _rewrite(f, lambda t: t.update(
            W_skip=np.ascontiguousarray(t["W_skip"].T))),
        r"tensor 'W_skip' has shape \(8, 6\); expected \(6, 8\)"),
    "infinite W_skip": (
        "skip_transcoder", lambda f: _rewrite(
            f, lambda t: t["W_skip"].__setitem__((0, 0), np.inf)),
        r"tensor 'W_skip' holds NaN or infinite values"),
    "W_skip beyond float32": (
        "skip_transcoder", lambda f: _rewrite(f, lambda t: t.update(
            W_skip=np.full((6, 8), 1e300))),
        r"tensor 'W_skip' holds values beyond float32's range"),
    "a topk transcoder": (
        "transcoder", lambda f: _edit_cfg(f, lambda c: c.update(
            architecture="topk_transcoder")),
        r"`architecture` must be one of .*'jumprelu_skip_transcoder'\]. "
        r"Received: architecture='topk_transcoder'"),
    "symbolic link": ("skip_transcoder", _symlink_weights,
                      r"sae_weights.safetensors: a symbolic link"),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_tampered_transcoder_folder_is_refused(tmp_path, tampering):
    kind, change, message = TAMPERINGS[tampering]
    folder = _saelens_copy(tmp_path, kind)
    change(folder)
    with pytest.raises(ValueError, match=message):
        load_sae(folder)


def test_metadata_cannot_turn_an_sae_folder_into_a_transcoder(tmp_path):
    """The folder, not our metadata, says SAE or transcoder: an SAE folder whose
    metadata claims `output_dim`/`skip` still loads as the SAE SAELens reads."""
    folder = save_sae(gsl.build_sae("relu", 4, 8, sparsity_coefficient=0.1), tmp_path)

    def claim(cfg):
        cfg["metadata"]["gated_sae_layers"]["hyperparameters"].update(
            output_dim=4, skip=True)

    _edit_cfg(folder, claim)
    model = load_sae(folder)
    assert not model.is_transcoder
    assert "output_dim" not in model.architecture["arguments"]
