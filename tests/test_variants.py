"""The SAE variants as models: numpy reference, save/load, real training, errors."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from gated_sae_layers.layers.prefix_mask import PrefixMask
from gated_sae_layers.models.builders import build_sae
from tests import reference as ref
from tests.reference import randomize

# Non-default arguments for every variant: (architecture, kwargs).
VARIANTS = {
    "relu": ("relu", {"sparsity_coefficient": 0.02}),
    "relu_weighted": ("relu", {"sparsity_coefficient": 0.02,
                               "weight_by_decoder_norm": True}),
    "topk": ("topk", {"k": 3, "k_aux": 4, "dead_steps_threshold": 2,
                      "aux_coefficient": 0.5}),
    "batch_topk": ("batch_topk", {"k": 3, "k_aux": 4, "dead_steps_threshold": 2,
                                  "aux_coefficient": 0.5, "threshold_momentum": 0.9}),
    "jumprelu": ("jumprelu", {"sparsity_coefficient": 0.02, "initial_threshold": 0.05,
                              "bandwidth": 0.05}),
    "matryoshka": ("matryoshka", {"k": 3, "prefix_sizes": [2, 6], "k_aux": 4,
                                  "dead_steps_threshold": 2, "aux_coefficient": 0.5}),
}
TERMS = {"relu": {"sparsity"}, "topk": {"aux"}, "batch_topk": {"aux"},
         "jumprelu": {"sparsity"}, "matryoshka": {"aux", "reconstruction_2",
                                                  "reconstruction_6", "fvu_2", "fvu_6"}}
DEAD_STEPS = np.array([0, 3, 0, 5, 1, 0, 2, 0, 0, 7, 0, 0], "int32")  # 4 dead at 2


def _build(variant, input_dim=6, latent_dim=12, seed=7):
    architecture, kwargs = VARIANTS[variant]
    model = build_sae(architecture, input_dim, latent_dim, **kwargs)
    randomize(model, seed=seed)
    encoder = model.encoder
    if hasattr(encoder, "steps_since_fired"):
        encoder.steps_since_fired.assign(DEAD_STEPS[:latent_dim])
    if hasattr(encoder, "inference_threshold"):
        encoder.inference_threshold.assign(0.4)
    return model


def _x(rows=32, width=6, seed=4):
    return np.random.default_rng(seed).normal(size=(rows, width)).astype("float32")


def _expected(variant, model, x):
    """Reference outputs (inference) and logs of a variant on `x`."""
    _, kwargs = VARIANTS[variant]
    enc, dec = model.encoder, model.decoder
    W_dec, b_dec = np.asarray(dec.kernel, "float64"), np.asarray(dec.bias, "float64")
    z = ref.pre_activation(x, enc.kernel, enc.bias, b_dec)
    out, logs = {}, {}
    if variant.startswith("relu"):
        latents = ref.relu_latents(z)
        penalized = latents * np.linalg.norm(W_dec, axis=1) if "weighted" in variant \
            else latents
        logs["sparsity"] = ref.penalty(kwargs["sparsity_coefficient"], penalized)
    elif variant == "jumprelu":
        latents, out["active_latents"] = ref.jumprelu_latents(
            z, np.exp(np.asarray(enc.log_threshold, "float64")))
        logs["sparsity"] = ref.penalty(kwargs["sparsity_coefficient"],
                                       out["active_latents"])
    else:
        latents = ref.topk_latents(z, kwargs["k"]) if variant == "topk" else \
            np.where(np.maximum(z, 0) > float(enc.inference_threshold), np.maximum(z, 0), 0.0)
        out["aux_latents"] = ref.auxk(z, DEAD_STEPS, kwargs["dead_steps_threshold"],
                                      kwargs["k_aux"])
    out["latents"] = latents
    out["reconstruction"] = ref.decode(latents, W_dec, b_dec)
    logs["reconstruction"] = ref.squared_error(x, out["reconstruction"])
    if "aux_latents" in out:
        out["aux_residual"] = ref.auxk_residual(x, out["reconstruction"],
                                                out["aux_latents"], W_dec)
        logs["aux"] = ref.penalty(kwargs["aux_coefficient"], out["aux_residual"],
                                  square=True)
    for size in kwargs.get("prefix_sizes", ()):
        prefix = np.where(np.arange(latents.shape[1]) < size, latents, 0.0)
        out[f"reconstruction_{size}"] = ref.decode(prefix, W_dec, b_dec)
        logs[f"reconstruction_{size}"] = ref.squared_error(x, out[f"reconstruction_{size}"])
    logs["loss"] = sum(logs.values())
    logs["l0"] = (latents > 0).sum(1).mean()
    logs["dead_features"] = (latents.max(0) <= 0).sum()
    logs["fvu"] = ((x - out["reconstruction"]) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    return out, logs


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_forward_and_logs_match_numpy_reference(variant):
    model, x = _build(variant), _x()
    expected, expected_logs = _expected(variant, model, x)
    outputs = model.predict_on_batch(x)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    assert 0 < (expected["latents"] > 0).mean() < 1
    if "aux_latents" in expected:  # dead latents really take part
        assert np.abs(expected["aux_residual"]).max() > 0
    model.compile(optimizer="sgd")
    logs = model.evaluate(x, batch_size=len(x), verbose=0, return_dict=True)
    assert set(logs) == set(expected_logs) | {"fvu_2", "fvu_6"} & set(logs)
    for name, value in expected_logs.items():
        np.testing.assert_allclose(logs[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("variant", ["topk", "batch_topk"])
def test_training_call_updates_dead_counter_and_threshold(variant):
    model, x = _build(variant), _x()
    enc = model.encoder
    _, kwargs = VARIANTS[variant]
    z = ref.pre_activation(x, enc.kernel, enc.bias, model.decoder.bias)
    threshold = float(enc.inference_threshold) if variant == "batch_topk" else None
    out = model(x, training=True)
    latents = ref.topk_latents(z, 3) if variant == "topk" else ref.batch_topk_latents(z, 3)
    np.testing.assert_allclose(out["latents"], latents, rtol=1e-4, atol=1e-5)
    steps = ref.steps_update(DEAD_STEPS, latents)
    np.testing.assert_array_equal(enc.steps_since_fired, steps)
    np.testing.assert_allclose(
        out["aux_latents"], ref.auxk(z, steps, kwargs["dead_steps_threshold"], 4),
        rtol=1e-4, atol=1e-5)
    if variant == "batch_topk":
        smallest = latents[latents > 0].min()
        np.testing.assert_allclose(float(enc.inference_threshold),
                                   0.9 * threshold + 0.1 * smallest, rtol=1e-5)
    model.predict_on_batch(x)  # inference leaves the state alone
    np.testing.assert_array_equal(enc.steps_since_fired, steps)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_keras_file_round_trip(variant, tmp_path):
    model, x = _build(variant), _x()
    path = tmp_path / f"{variant}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.encoder) is type(model.encoder)
    assert loaded.encoder.get_config() == model.encoder.get_config()
    assert loaded.decoder.get_config() == model.decoder.get_config()
    assert {k: v.get_config() for k, v in loaded.loss_terms.items()} == {
        k: v.get_config() for k, v in model.loss_terms.items()}
    for a, b in zip(model.non_trainable_weights, loaded.non_trainable_weights):
        np.testing.assert_array_equal(a, b)
    expected, actual = model.predict_on_batch(x), loaded.predict_on_batch(x)
    assert set(actual) == set(expected)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def digits():
    return (load_digits().data / 16.0).astype("float32")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_short_fit_on_digits_lowers_the_loss(variant, digits):
    architecture, kwargs = VARIANTS[variant]
    kwargs = {**kwargs, "k": 8} if "k" in kwargs else kwargs
    if "prefix_sizes" in kwargs:
        kwargs["prefix_sizes"] = [16, 48]
    model = build_sae(architecture, 64, 96, **kwargs)
    model.decoder.bias.assign(digits.mean(axis=0))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(digits, epochs=3, batch_size=128, verbose=0).history
    terms = TERMS[architecture] - ({"fvu_2", "fvu_6", "reconstruction_2",
                                   "reconstruction_6"})
    terms |= {"reconstruction_16", "reconstruction_48", "fvu_16", "fvu_48"} \
        if architecture == "matryoshka" else set()
    assert set(history) == {"loss", "reconstruction", "l0", "fvu", "dead_features"} | terms
    assert all(np.isfinite(v).all() for v in history.values())
    assert history["loss"][-1] < 0.75 * history["loss"][0]
    assert history["fvu"][-1] < 0.5


def test_jumprelu_thresholds_learn_and_l0_falls(digits):
    """SAELens #494/#719 report thresholds that never move and an L0 that never falls."""
    model = build_sae("jumprelu", 64, 128, sparsity_coefficient=0.03,
                      initial_threshold=0.05, bandwidth=0.05)
    model.decoder.bias.assign(digits.mean(axis=0))
    before = np.asarray(model.encoder.learned_threshold)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(digits, epochs=10, batch_size=64, verbose=0).history
    after = np.asarray(model.encoder.learned_threshold)
    print(f"theta mean {before.mean():.4f} -> {after.mean():.4f}, "
          f"l0 {history['l0'][0]:.1f} -> {history['l0'][-1]:.1f}, fvu {history['fvu'][-1]:.3f}")
    assert np.all(after != before)
    assert after.mean() > 1.5 * before.mean()
    assert history["l0"][-1] < 0.8 * history["l0"][0]
    assert history["fvu"][-1] < 0.15


def test_auxk_term_is_zero_without_dead_latents_and_positive_with_them(digits):
    logs = {}
    for threshold in (10_000, 1):
        model = build_sae("topk", 64, 96, k=4, k_aux=16, dead_steps_threshold=threshold)
        model.decoder.bias.assign(digits.mean(axis=0))
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        logs[threshold] = model.fit(digits[:512], epochs=1, batch_size=128,
                                    verbose=0).history
    assert logs[10_000]["aux"] == [0.0]
    assert logs[1]["aux"][0] > 0


@pytest.mark.parametrize("variant", ["relu", "jumprelu"])
def test_sparsity_coefficient_is_settable(variant):
    model = _build(variant)
    assert model.sparsity_coefficient == pytest.approx(0.02)
    model.set_sparsity_coefficient(0.5)
    assert model.sparsity_coefficient == pytest.approx(0.5)


def test_relu_weighted_by_decoder_norm_frees_the_decoder():
    assert _build("relu_weighted").decoder.kernel_constraint is None
    assert _build("relu").decoder.kernel_constraint is not None


def test_gated_is_built_by_the_existing_builder():
    model = build_sae("gated", 6, 12, sparsity_coefficient=0.1, aux_coefficient=0.5)
    assert type(model.encoder).__name__ == "GatedEncoder"
    assert model.sparsity_coefficient == pytest.approx(0.1)


@pytest.mark.parametrize(
    "architecture, kwargs, error, match",
    [
        ("vanilla", {}, ValueError, r"must be one of \['gated', 'relu', 'topk'"),
        ("topk", {"k": 13}, ValueError, r"`k` must be at most `latent_dim` \(12\)"),
        ("topk", {"k": 2.5}, TypeError, "Received: k=2.5"),
        ("topk", {"k": 2, "sparsity_coefficient": 0.1}, TypeError,
         r"does not take \['sparsity_coefficient'\]"),
        ("relu", {}, TypeError, r"needs \['sparsity_coefficient'\]"),
        ("relu", {"sparsity_coefficient": -1.0}, ValueError, "sparsity_coefficient"),
        ("relu", {"sparsity_coefficient": 0.1, "weight_by_decoder_norm": "yes"},
         TypeError, "weight_by_decoder_norm"),
        ("batch_topk", {"k": 2, "k_aux": 0}, ValueError, "Received: k_aux=0"),
        ("batch_topk", {"k": 2, "threshold_momentum": 1.0}, ValueError,
         r"threshold_momentum` must be in \[0, 1\)"),
        ("topk", {"k": 2, "dead_steps_threshold": 0}, ValueError, "dead_steps_threshold"),
        ("topk", {"k": 2, "aux_coefficient": -0.1}, ValueError, "aux_coefficient"),
        ("jumprelu", {"sparsity_coefficient": 0.1, "bandwidth": 0.0}, ValueError,
         "Received: bandwidth=0.0"),
        ("jumprelu", {"sparsity_coefficient": 0.1, "initial_threshold": -1.0},
         ValueError, "initial_threshold"),
        ("matryoshka", {"k": 2, "prefix_sizes": [6, 2]}, ValueError, "strictly increasing"),
        ("matryoshka", {"k": 2, "prefix_sizes": [2, 13]}, ValueError, "latent_dim=12"),
        ("matryoshka", {"k": 2, "prefix_sizes": "4"}, TypeError, "list of integers"),
    ],
)
def test_bad_hyper_parameters(architecture, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_sae(architecture, 6, 12, **kwargs)


def test_prefix_mask_errors():
    with pytest.raises(ValueError, match="Received: size=0"):
        PrefixMask(0)
    with pytest.raises(ValueError, match="keeps the first 4 latents"):
        PrefixMask(4)(np.ones((2, 3), "float32"))
