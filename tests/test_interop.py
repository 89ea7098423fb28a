"""SAELens / sparsify / dictionary_learning folders: round trips, fixtures, tampering.

The fixtures in `tests/fixtures/saelens/<name>/` were written by the real
sae-lens 6.x (`SAELENS_WRITE_FIXTURES=1 python -m pytest
tests/test_saelens_proof.py -n 0`), with the inputs and SAELens' own
`encode`/`decode` outputs; no torch is needed here.
"""

import json
import pathlib
import shutil
import struct
import warnings

import hypothesis
import keras
import numpy as np
import pytest
from hypothesis import strategies as st
from keras import ops

import gated_sae_layers as gsl
from gated_sae_layers.interop import (
    load_dictionary_learning,
    load_feature_density,
    load_sae,
    load_sparsify,
    save_sae,
)
from gated_sae_layers.interop._checks import numpy_dtype
from gated_sae_layers.interop._safetensors import read_safetensors

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "saelens"
FIXTURE_NAMES = ("standard", "gated", "jumprelu", "topk", "topk_rescaled",
                 "standard_no_b_dec")
VARIANTS = {
    "gated": ("gated", {"sparsity_coefficient": 0.3, "aux_coefficient": 0.5}),
    "relu": ("relu", {"sparsity_coefficient": 0.3}),
    "relu_weighted": ("relu", {"sparsity_coefficient": 0.3,
                               "weight_by_decoder_norm": True}),
    "jumprelu": ("jumprelu", {"sparsity_coefficient": 0.3, "bandwidth": 0.01}),
    "topk": ("topk", {"k": 2, "k_aux": 3}),
    "batch_topk": ("batch_topk", {"k": 2, "threshold_momentum": 0.9}),
    "matryoshka": ("matryoshka", {"k": 2, "prefix_sizes": [1]}),
}


def _random_sae(variant, d_in, d_sae, seed):
    """A variant of `VARIANTS` with random weights (unit decoder rows but for
    `relu_weighted`) and a positive inference threshold."""
    architecture, kwargs = VARIANTS[variant]
    model = gsl.build_sae(architecture, d_in, d_sae, **kwargs)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0, 0.5, size=variable.shape).astype("float32"))
    kernel = rng.normal(size=(d_sae, d_in))
    kernel /= np.linalg.norm(kernel, axis=1, keepdims=True)
    if variant == "relu_weighted":
        kernel *= rng.uniform(0.5, 2.0, size=(d_sae, 1))
    model.decoder.kernel.assign(kernel.astype("float32"))
    if variant in ("batch_topk", "matryoshka"):
        model.encoder.inference_threshold.assign(float(rng.uniform(0.05, 0.5)))
    return model


def _tensors(folder):
    return read_safetensors(pathlib.Path(folder), "sae_weights.safetensors")


def _weights(model):
    return {v.path: ops.convert_to_numpy(v) for v in model.weights
            if v.trainable or "threshold" in v.path}


@hypothesis.settings(max_examples=12)
@hypothesis.given(variant=st.sampled_from(sorted(VARIANTS)),
                  d_in=st.integers(1, 6), d_sae=st.integers(2, 9),
                  dtype=st.sampled_from(["float32", "bfloat16"]),
                  seed=st.integers(0, 2**16))
def test_export_then_import_is_exact(tmp_path_factory, variant, d_in, d_sae, dtype,
                                     seed):
    """The contract: importing an export and exporting again gives back the same
    stored tensors, bit for bit, in float32 and in bfloat16; the imported
    weights are the model's own (float32), or their bfloat16 rounding; only
    `relu_weighted` changes, by the documented decoder-norm fold."""
    model = _random_sae(variant, d_in, d_sae, seed)
    first = save_sae(model, tmp_path_factory.mktemp("a"), dtype=dtype)
    loaded = load_sae(first)
    second = save_sae(loaded, tmp_path_factory.mktemp("b"), dtype=dtype)
    a, b = _tensors(first), _tensors(second)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == numpy_dtype(dtype)
        np.testing.assert_array_equal(a[name].view("uint8"), b[name].view("uint8"))
    assert type(loaded.encoder) is type(model.encoder)
    assert json.loads((first / "cfg.json").read_text())["metadata"][
        "gated_sae_layers"]["architecture"] == variant.split("_weighted")[0]
    if variant == "relu_weighted":
        return
    stored = numpy_dtype(dtype)
    original, imported = _weights(model), _weights(loaded)
    for path, value in original.items():
        if path.endswith("log_threshold"):  # compared through exp, as the layer uses it
            continue
        expected = value.astype(stored).astype("float32")
        np.testing.assert_array_equal(imported[path], expected, err_msg=path)
    if variant == "jumprelu" and dtype == "float32":
        np.testing.assert_array_equal(
            ops.convert_to_numpy(loaded.encoder.learned_threshold),
            ops.convert_to_numpy(model.encoder.learned_threshold))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_then_import_keeps_outputs(tmp_path, variant):
    model = _random_sae(variant, 6, 12, seed=3)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    loaded = load_sae(save_sae(model, tmp_path))
    expected, actual = model.predict_on_batch(x), loaded.predict_on_batch(x)
    np.testing.assert_allclose(actual["reconstruction"], expected["reconstruction"],
                               atol=1e-6)
    if variant != "relu_weighted":   # there latent i is scaled by |W_dec_i|
        np.testing.assert_array_equal(actual["latents"], expected["latents"])


def test_export_folds_scale_and_decoder_norms(tmp_path):
    model = _random_sae("relu_weighted", 4, 8, seed=1)
    model.normalization_scale = 2.0
    folder = save_sae(model, tmp_path, metadata={"hook_name": "blocks.3.hook_resid_post",
                                                 "context_size": 64})
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    assert cfg["metadata"]["sae_lens_version"].startswith("6.")
    ours = cfg["metadata"]["gated_sae_layers"]
    assert ours["normalization_scale"] == 2.0 and ours["decoder_norms_folded"]
    assert ours["hyperparameters"]["sparsity_coefficient"] == pytest.approx(0.3)
    np.testing.assert_allclose(
        np.linalg.norm(_tensors(folder)["W_dec"], axis=1), 1.0, rtol=1e-6)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    raw = load_sae(folder).predict_on_batch(x)["reconstruction"]
    scaled = model.predict_on_batch(2.0 * x)["reconstruction"] / 2.0
    np.testing.assert_allclose(raw, scaled, atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*not unit norm")
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_import_reproduces_saelens_outputs(name):
    folder = FIXTURES / name
    outputs = load_sae(folder).predict_on_batch(np.load(folder / "inputs.npy"))
    np.testing.assert_allclose(outputs["latents"],
                               np.load(folder / "expected_latents.npy"), atol=1e-5)
    np.testing.assert_allclose(outputs["reconstruction"],
                               np.load(folder / "expected_reconstruction.npy"),
                               atol=1e-5)


def test_import_warns_about_non_unit_decoder_rows():
    with pytest.warns(UserWarning, match="not unit norm"):
        model = load_sae(FIXTURES / "gated")
    assert isinstance(model.encoder, gsl.GatedEncoder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # ReLU weighting by norm has no constraint
        assert isinstance(load_sae(FIXTURES / "standard").encoder, gsl.ReLUEncoder)


def test_loaded_model_trains_and_round_trips_keras(tmp_path):
    model = load_sae(FIXTURES / "standard")
    model.set_sparsity_coefficient(0.01)
    x = np.load(FIXTURES / "standard" / "inputs.npy")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    model.save(tmp_path / "sae.keras")
    reloaded = keras.saving.load_model(tmp_path / "sae.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict_on_batch(x)["reconstruction"],
                               model.predict_on_batch(x)["reconstruction"], atol=1e-6)


def test_feature_density_round_trips(tmp_path):
    model = _random_sae("topk", 4, 8, seed=0)
    density = np.array([0, 1e-6, 1e-3, 0.01, 0.1, 0.5, 0.9, 1.0])
    folder = save_sae(model, tmp_path, feature_density=density)
    sparsity = read_safetensors(folder, "sparsity.safetensors")["sparsity"]
    np.testing.assert_allclose(sparsity, np.log10(density + 1e-10), rtol=1e-6)
    np.testing.assert_allclose(load_feature_density(folder), density, atol=1e-9,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="`feature_density` must hold 8"):
        save_sae(model, tmp_path, feature_density=density[:3])


def test_save_rejects_what_saelens_cannot_hold(tmp_path):
    untrained = gsl.build_sae("batch_topk", 4, 8, k=2)
    with pytest.raises(ValueError, match="Train it with `fit` first"):
        save_sae(untrained, tmp_path)
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        save_sae(untrained, tmp_path, dtype="int8")
    with pytest.raises(TypeError, match="must be a `SparseAutoencoder`"):
        save_sae(keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)]), tmp_path)
    with pytest.raises(ValueError, match="JSON values only"):
        save_sae(_random_sae("relu", 4, 8, 0), tmp_path, metadata={"x": object()})


# ------------------------------------------------------------------ tampering
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    return save_sae(_random_sae("jumprelu", 4, 8, seed=0), folder)


def _copy(exported, tmp_path):
    return pathlib.Path(shutil.copytree(exported, tmp_path / "sae"))


def _rewrite(folder, change):
    tensors = {k: np.array(v) for k, v in _tensors(folder).items()}
    change(tensors)
    (folder / "sae_weights.safetensors").write_bytes(safetensors_numpy.save(tensors))


def _edit_cfg(folder, change):
    cfg = json.loads((folder / "cfg.json").read_text())
    change(cfg)
    (folder / "cfg.json").write_text(json.dumps(cfg))


TAMPERINGS = {
    "missing tensor": (lambda f: _rewrite(f, lambda t: t.pop("threshold")),
                       r"sae_weights.safetensors: missing tensor\(s\) \['threshold'\]"),
    "extra tensor": (lambda f: _rewrite(f, lambda t: t.update(W_skip=t["b_dec"])),
                     r"sae_weights.safetensors: unexpected tensor\(s\) \['W_skip'\]"),
    "wrong shape": (lambda f: _rewrite(f, lambda t: t.update(b_enc=t["b_enc"][:5])),
                    r"tensor 'b_enc' has shape \(5,\); expected \(8,\)"),
    "NaN": (lambda f: _rewrite(f, lambda t: t["W_enc"].__setitem__((0, 0), np.nan)),
            r"tensor 'W_enc' holds NaN or infinite values"),
    "integer tensor": (lambda f: _rewrite(f, lambda t: t.update(
        b_dec=t["b_dec"].astype("int32"))), r"dtype I32; expected a floating dtype"),
    "non-JSON cfg": (lambda f: (f / "cfg.json").write_text("{'d_in': 4"),
                     r"cfg.json: not valid JSON"),
    "cfg not an object": (lambda f: (f / "cfg.json").write_text("[1, 2]"),
                          r"cfg.json: expected a JSON object"),
    "unknown architecture": (
        lambda f: _edit_cfg(f, lambda c: c.update(architecture="temporal")),
        r"cfg.json: `architecture` must be one of .*Received: architecture='temporal'"),
    "transcoder without d_out": (
        lambda f: _edit_cfg(f, lambda c: c.update(architecture="jumprelu_transcoder")),
        r"cfg.json: `d_out` must be an integer >= 1. Received: d_out=None"),
    "missing d_sae": (lambda f: _edit_cfg(f, lambda c: c.pop("d_sae")),
                      r"cfg.json: `d_sae` must be an integer >= 1. Received: d_sae=None"),
    "mismatched d_in": (lambda f: _edit_cfg(f, lambda c: c.update(d_in=5)),
                        r"tensor 'W_enc' has shape \(4, 8\); expected \(5, 8\)"),
    "truncated safetensors": (
        lambda f: (f / "sae_weights.safetensors").write_bytes(
            (f / "sae_weights.safetensors").read_bytes()[:-7]),
        r"sae_weights.safetensors: tensor .* runs past the end of the file"),
    "truncated header": (
        lambda f: (f / "sae_weights.safetensors").write_bytes(
            (f / "sae_weights.safetensors").read_bytes()[:40]),
        r"sae_weights.safetensors: truncated or corrupt safetensors file"),
    "tampered header": (
        lambda f: (f / "sae_weights.safetensors").write_bytes(
            struct.pack("<Q", 2) + b"[]"),
        r"corrupt safetensors header \(not a JSON object\)"),
    "symbolic link": (
        lambda f: ((f / "cfg.json").rename(f.parent / "elsewhere.json"),
                   (f / "cfg.json").symlink_to(f.parent / "elsewhere.json")),
        r"cfg.json: a symbolic link"),
    "missing weights": (lambda f: (f / "sae_weights.safetensors").unlink(),
                        r"no sae_weights.safetensors \(SAELens\)"),
    "bad sparsity": (
        lambda f: (f / "sparsity.safetensors").write_bytes(safetensors_numpy.save(
            {"sparsity": np.zeros(3, "float32")})),
        r"sparsity.safetensors: tensor 'sparsity' has shape \(3,\); expected \(8,\)"),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_tampered_folder_raises_naming_file_and_problem(exported, tmp_path, tampering):
    change, message = TAMPERINGS[tampering]
    folder = _copy(exported, tmp_path)
    change(folder)
    with pytest.raises(ValueError, match=message):
        load_sae(folder)


def test_load_needs_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="must be an existing folder"):
        load_sae(tmp_path / "nowhere")


# ---------------------------------------------- sparsify, dictionary_learning
def _topk_reference(x, w_enc, b_enc, w_dec, b_dec, k):
    pre = np.maximum((x - b_dec) @ w_enc + b_enc, 0.0)
    keep = np.argsort(-pre, axis=1)[:, :k]
    latents = np.zeros_like(pre)
    np.put_along_axis(latents, keep, np.take_along_axis(pre, keep, 1), 1)
    return latents, latents @ w_dec + b_dec


def test_load_sparsify_matches_its_formula(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"encoder.weight": rng.normal(size=(16, 8)),
               "encoder.bias": rng.normal(0, 0.1, size=16),
               "W_dec": rng.normal(size=(16, 8)), "b_dec": rng.normal(size=8)}
    weights = {name: value.astype("float32") for name, value in weights.items()}
    (tmp_path / "sae.safetensors").write_bytes(safetensors_numpy.save(weights))
    cfg = {"activation": "topk", "expansion_factor": 2, "normalize_decoder": True,
           "num_latents": 0, "k": 3, "multi_topk": False, "skip_connection": False,
           "transcode": False, "d_in": 8}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    x = rng.normal(size=(10, 8)).astype("float32")
    with pytest.warns(UserWarning, match="not unit norm"):
        outputs = load_sae(tmp_path).predict_on_batch(x)
    latents, reconstruction = _topk_reference(
        x, weights["encoder.weight"].T, weights["encoder.bias"], weights["W_dec"],
        weights["b_dec"], 3)
    np.testing.assert_allclose(outputs["latents"], latents, atol=1e-5)
    np.testing.assert_allclose(outputs["reconstruction"], reconstruction, atol=1e-5)
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "skip_connection": True}))
    with pytest.raises(ValueError, match="cfg.json: `skip_connection` is true and "
                                         "`transcode` false"):
        load_sparsify(tmp_path)


def test_load_dictionary_learning_autoencoder(tmp_path):
    rng = np.random.default_rng(1)
    weights = {"encoder.weight": rng.normal(size=(12, 4)),
               "encoder.bias": rng.normal(size=12), "decoder.weight": rng.normal(
                   size=(4, 12)), "bias": rng.normal(size=4)}
    weights = {name: value.astype("float32") for name, value in weights.items()}
    (tmp_path / "ae.safetensors").write_bytes(safetensors_numpy.save(weights))
    (tmp_path / "cfg.json").write_text("{}")
    x = rng.normal(size=(6, 4)).astype("float32")
    outputs = load_sae(tmp_path).predict_on_batch(x)
    latents = np.maximum((x - weights["bias"]) @ weights["encoder.weight"].T
                         + weights["encoder.bias"], 0)
    np.testing.assert_allclose(outputs["latents"], latents, atol=1e-5)
    np.testing.assert_allclose(outputs["reconstruction"],
                               latents @ weights["decoder.weight"].T + weights["bias"],
                               atol=1e-5)
    (tmp_path / "cfg.json").write_text('{"k": 2}')
    with pytest.raises(ValueError, match=r"missing tensor\(s\) \['b_dec', 'threshold'\]"):
        load_dictionary_learning(tmp_path)


# ------------------------------------------------------------------ console
def test_cli_export_and_import(tmp_path, capsys):
    import argparse

    from gated_sae_layers.cli.interop import add_interop_commands

    top = argparse.ArgumentParser(prog="gated-sae")
    add_interop_commands(top.add_subparsers(dest="command"))
    _random_sae("topk", 4, 8, seed=0).save(tmp_path / "in.keras")
    args = top.parse_args(["export", str(tmp_path / "in.keras"), str(tmp_path / "f"),
                           "--hook-name", "blocks.0.hook_resid_post"])
    assert args.run(args)["architecture"] == "topk"
    args = top.parse_args(["import", str(tmp_path / "f"), str(tmp_path / "out.keras")])
    assert args.run(args)["encoder"] == "TopKEncoder"
    assert (tmp_path / "out.keras").is_file()
    args = top.parse_args(["export", str(tmp_path / "missing.keras"), str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="must be an existing .keras file"):
        args.run(args)
