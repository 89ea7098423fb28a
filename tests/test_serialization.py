"""`.keras` round trips, in a fresh process that only imports gated_sae_layers."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers.models.folding import fold_normalization
from tests.harness import with_edited_config

LOAD_AND_PREDICT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    import gated_sae_layers  # registers the classes
    from gated_sae_layers.models.folding import fold_normalization
    model = keras.saving.load_model(sys.argv[1], safe_mode=True)
    x = np.load(sys.argv[2])
    out = model.predict_on_batch(x)
    if model.normalization_scale is not None:
        folded = fold_normalization(model).predict_on_batch(x)
        out.update({"folded_" + k: v for k, v in folded.items()})
    np.savez(sys.argv[3], **{k: np.asarray(v) for k, v in out.items()})
    print(json.dumps({"class": type(model).__name__,
                      "normalization_scale": model.normalization_scale,
                      "lambda": model.sparsity_coefficient,
                      "iterations": int(model.optimizer.iterations.numpy()),
                      "remove_parallel_gradient": model.decoder.remove_parallel_gradient}))
""")


def _load_in_fresh_process(path, x, tmp_path):
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(path), str(tmp_path / "x.npy"),
         str(tmp_path / "out.npz")],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), dict(
        np.load(tmp_path / "out.npz"))


@pytest.mark.parametrize("seed_api", [False, True])
def test_keras_file_round_trip_in_a_fresh_process(seed_api, tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 6)).astype("float32")
    if seed_api:
        model = gsl.GatedSAE(6, 12, lambda_sparse=0.05, aux_weight=0.3, clip_norm=2.0,
                             normalization_scale=2.5)
    else:
        model = gsl.build_gated_sae(6, 12, sparsity_coefficient=0.05,
                                    aux_coefficient=0.3, remove_parallel_gradient=True,
                                    name="custom_sae")
    model.compile(optimizer=keras.optimizers.Adam(1e-2, beta_1=0.0))
    model.fit(x, epochs=2, batch_size=8, verbose=0)
    if seed_api:
        model.set_lambda(0.125)
    else:
        model.set_sparsity_coefficient(0.125)
    path = tmp_path / "model.keras"
    model.save(path)
    info, outputs = _load_in_fresh_process(path, x, tmp_path)
    expected = model.predict_on_batch(x)
    for name, value in expected.items():
        np.testing.assert_array_equal(outputs[name], np.asarray(value))
    assert info["class"] == ("GatedSAE" if seed_api else "SparseAutoencoder")
    assert info["lambda"] == 0.125
    assert info["iterations"] == 10  # the optimizer state comes back too
    assert info["remove_parallel_gradient"] is (not seed_api)
    if seed_api:
        # `GatedSAE` keeps `normalization_scale`, and `fold_normalization`
        # works the same on the reloaded model.
        assert info["normalization_scale"] == 2.5
        for name, value in fold_normalization(model).predict_on_batch(x).items():
            np.testing.assert_allclose(outputs["folded_" + name], np.asarray(value),
                                       rtol=1e-6, atol=1e-6)
        scaled = np.asarray(model.predict_on_batch(2.5 * x)["reconstruction"])
        np.testing.assert_allclose(outputs["folded_reconstruction"], scaled / 2.5,
                                   rtol=1e-4, atol=1e-5)
    else:
        assert info["normalization_scale"] is None


def _perturbed_gated_sae(**kwargs):
    """A `GatedSAE(8, 16)` with random, trained-looking weights (no `fit` needed)."""
    model = gsl.GatedSAE(8, 16, **kwargs)
    rng = np.random.default_rng(3)
    for weight in model.trainable_weights:
        value = np.asarray(weight) + rng.normal(scale=0.3, size=weight.shape)
        weight.assign(value.astype("float32"))
    return model


def test_gated_sae_saved_without_the_newer_config_keys_still_loads(tmp_path):
    # Files written before `normalization_scale`, `dtype` and `trainable` were
    # in `GatedSAE.get_config` have only the seed arguments and the name, and
    # files written before the move to `compat/gated_sae_tf.py` name the
    # class's old module: Keras finds it by its registered name.
    x = np.random.default_rng(5).normal(size=(8, 8)).astype("float32")
    model = _perturbed_gated_sae(lambda_sparse=0.25)
    model.save(tmp_path / "new.keras")
    def as_older_versions_wrote_it(config):
        for key in ("normalization_scale", "dtype", "trainable"):
            del config["config"][key]
        assert config["module"] == "gated_sae_layers.compat.gated_sae_tf"
        assert config["registered_name"] == "gated_sae_layers>GatedSAE"
        config["module"] = "gated_sae_layers.models.seed_compat"

    with_edited_config(tmp_path / "new.keras", tmp_path / "old.keras",
                       as_older_versions_wrote_it)
    reloaded = keras.saving.load_model(tmp_path / "old.keras", safe_mode=True)
    assert isinstance(reloaded, gsl.GatedSAE) and reloaded.normalization_scale is None
    assert reloaded.lambda_sparse == 0.25
    for name, value in model.predict_on_batch(x).items():
        np.testing.assert_array_equal(reloaded.predict_on_batch(x)[name], np.asarray(value))
    with pytest.raises(ValueError, match="normalization_scale"):
        fold_normalization(reloaded)


def test_reloaded_model_keeps_training_where_it_stopped(tmp_path):
    x = np.random.default_rng(1).normal(size=(32, 4)).astype("float32")
    model = gsl.build_gated_sae(4, 8, 0.01)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    logs_a = model.fit(x, epochs=1, batch_size=8, shuffle=False, verbose=0).history
    logs_b = reloaded.fit(x, epochs=1, batch_size=8, shuffle=False, verbose=0).history
    for name in logs_a:
        np.testing.assert_allclose(logs_a[name], logs_b[name], rtol=1e-5)


def test_unregistered_load_says_what_to_import(tmp_path):
    model = gsl.build_gated_sae(4, 8, 0.01)
    model.save(tmp_path / "m.keras")
    code = ("import keras, sys\n"
            "try:\n"
            "    keras.saving.load_model(sys.argv[1])\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e)\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.keras")],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "gated_sae_layers" in result.stdout


VARIANTS = {
    "gated": {"sparsity_coefficient": 0.02, "weight_by_decoder_norm": True,
              "aux_trains_decoder": True},
    "relu": {"sparsity_coefficient": 0.02, "weight_by_decoder_norm": True},
    "topk": {"k": 3},
    "batch_topk": {"k": 3},
    "jumprelu": {"sparsity_coefficient": 0.02},
    "matryoshka": {"k": 3, "prefix_sizes": [4, 8]},
}


# Transcoders and crosscoders (tests/test_transcoders.py), saved and loaded in
# the same new process: (builder, its arguments, whether fit takes targets).
DICTIONARIES = {
    "skip_topk_transcoder": (gsl.build_transcoder, ("topk", 6, 4, 16),
                             {"k": 3, "skip": True}, True),
    "gated_transcoder": (gsl.build_transcoder, ("gated", 6, 4, 16),
                         {"sparsity_coefficient": 1e-3}, True),
    "crosscoder": (gsl.build_crosscoder, (3, 2, 16), {"sparsity_coefficient": 1e-3}, False),
}


def test_every_variant_loads_in_a_fresh_process(tmp_path):
    """Every variant saved here, transcoders and crosscoders included, loads
    (safe mode) and predicts the same in one new process, its record kept."""
    x = np.random.default_rng(2).normal(size=(32, 6)).astype("float32")
    y = np.random.default_rng(3).normal(size=(32, 4)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for architecture, kwargs in sorted(VARIANTS.items()):
        model = gsl.build_sae(architecture, 6, 16, **kwargs)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.fit(x, epochs=1, batch_size=8, verbose=0)
        model.save(tmp_path / f"{architecture}.keras")
        expected[architecture] = model.predict_on_batch(x)
    for name, (builder, args, kwargs, paired) in DICTIONARIES.items():
        model = builder(*args, **kwargs)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.fit(x, *((y,) if paired else ()), epochs=1, batch_size=8, verbose=0)
        model.save(tmp_path / f"{name}.keras")
        expected[name] = model.predict_on_batch(x)
        (tmp_path / f"{name}.json").write_text(json.dumps(model.architecture))
    code = textwrap.dedent("""
        import json, sys, numpy as np, keras
        import gated_sae_layers
        folder, architectures = sys.argv[1], sys.argv[2:]
        x = np.load(f"{folder}/x.npy")
        for architecture in architectures:
            model = keras.saving.load_model(f"{folder}/{architecture}.keras",
                                            safe_mode=True)
            out = model.predict_on_batch(x)
            out["is_transcoder"] = np.asarray(model.is_transcoder)
            with open(f"{folder}/{architecture}_record.json", "w") as handle:
                json.dump(model.architecture, handle)
            np.savez(f"{folder}/{architecture}_out.npz",
                     **{k: np.asarray(v) for k, v in out.items()})
    """)
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), *sorted(VARIANTS), *DICTIONARIES],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    for architecture, outputs in expected.items():
        loaded = dict(np.load(tmp_path / f"{architecture}_out.npz"))
        assert bool(loaded.pop("is_transcoder")) is architecture.endswith("transcoder")
        if architecture in DICTIONARIES:
            assert (json.loads((tmp_path / f"{architecture}_record.json").read_text())
                    == json.loads((tmp_path / f"{architecture}.json").read_text()))
        assert sorted(loaded) == sorted(outputs), architecture
        for name, value in outputs.items():
            np.testing.assert_array_equal(loaded[name], np.asarray(value),
                                          err_msg=f"{architecture}: {name}")
