"""The gated-sae-tf 0.1.1 API: names, return values, and what it got wrong."""

import keras
import matplotlib
import numpy as np
import pytest
import scipy.stats
from sklearn.datasets import load_digits

import gated_sae_layers as gsl

matplotlib.use("Agg")

SEED_REPORT_KEYS = {"l0_mean", "l0_median", "alive", "dead", "n_features",
                    "alive_frac", "topk", "topk_share"}


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.data / 16.0).astype("float32"), data.target


@pytest.fixture(scope="module")
def trained(digits):
    x, _ = digits
    keras.utils.set_random_seed(0)
    sae = gsl.GatedSAE(input_dim=64, encoding_dim=128, lambda_sparse=0.5,
                       aux_weight=1.0, clip_norm=1.0)
    sae(x[:2])  # the seed's "build the weights" step works
    sae.b_dec.assign(x.mean(axis=0))
    steps = (len(x) // 64) * 20
    sae.compile(optimizer=keras.optimizers.Adam(
        gsl.WarmupCosineDecay(3e-3, warmup_steps=steps // 10, total_steps=steps),
        beta_1=0.0, beta_2=0.999))
    sae.fit(x, epochs=20, batch_size=64, verbose=0)
    return sae


def test_seed_constructor_and_attributes():
    sae = gsl.GatedSAE(10, 40, 2e-3, 0.5, None)
    assert (sae.input_dim, sae.encoding_dim, sae.clip_norm) == (10, 40, None)
    assert sae.lambda_sparse == pytest.approx(2e-3) and sae.aux_weight == 0.5
    assert tuple(sae.W_gate.shape) == (10, 40) and tuple(sae.W_dec.shape) == (40, 10)
    for name in ("b_gate", "r_mag", "b_mag"):
        assert tuple(getattr(sae, name).shape) == (40,)
    assert tuple(sae.b_dec.shape) == (10,)
    # Decoder rows start unit-norm (the seed's started at 0.55-0.86).
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sae.W_dec), axis=1), 1, atol=1e-6)
    assert set(sae.get_config()) == {"name", "input_dim", "encoding_dim", "lambda_sparse",
                                     "aux_weight", "clip_norm", "normalization_scale",
                                     "dtype", "trainable"}
    with pytest.raises(TypeError, match="encoding_dim"):
        gsl.GatedSAE(input_dim=10)
    with pytest.raises(ValueError, match="encoding_dim"):
        gsl.GatedSAE(10, 0)


ACCEPTED = ("input_dim, encoding_dim, lambda_sparse, aux_weight, clip_norm, name, "
            "normalization_scale, dtype, trainable")


def test_misspelled_or_extra_arguments_raise():
    # The seed package kept lambda 1e-3 silently here.
    with pytest.raises(TypeError) as info:
        gsl.GatedSAE(8, 16, lamda_sparse=0.5)
    assert "`lamda_sparse`" in str(info.value) and ACCEPTED in str(info.value)
    assert "Received: lamda_sparse=0.5" in str(info.value)
    with pytest.raises(TypeError, match="at most 5 positional arguments"):
        gsl.GatedSAE(8, 16, 1e-3, 1e-2, 1.0, "extra")
    with pytest.raises(TypeError, match="multiple values for `encoding_dim`"):
        gsl.GatedSAE(8, 16, encoding_dim=32)
    with pytest.raises(ValueError, match="`clip_norm` must be > 0"):
        gsl.GatedSAE(8, 16, clip_norm=0.0)
    with pytest.raises(TypeError, match="`lambda_sparse`"):
        gsl.GatedSAE(8, 16, lambda_sparse="0.5")


@pytest.mark.parametrize("input_dim", [8.0, "8", True, [8]])
def test_dims_of_the_wrong_type_raise_a_clear_type_error(input_dim):
    with pytest.raises(TypeError, match=r"`input_dim` must be a positive integer\. "
                                        r"Received: input_dim="):
        gsl.GatedSAE(input_dim, 16)


def test_numpy_integers_and_keras_model_keywords():
    sae = gsl.GatedSAE(np.int64(8), np.int32(16), np.float32(0.5), trainable=False,
                       name="seed", normalization_scale=np.float64(2.5))
    assert (sae.input_dim, sae.encoding_dim) == (8, 16)
    assert type(sae.get_config()["input_dim"]) is int
    assert sae.lambda_sparse == 0.5 and sae.normalization_scale == 2.5
    assert sae.name == "seed" and not sae.trainable and not sae.trainable_weights
    # The Functional-graph constructor (inputs, outputs) still works.
    template = gsl.build_gated_sae(8, 16, 0.1)
    revived = gsl.GatedSAE(template.inputs, template._outputs_struct,
                           loss_terms=template.loss_terms)
    assert isinstance(revived, gsl.GatedSAE)
    assert revived.lambda_sparse == pytest.approx(0.1)


def test_config_round_trip_keeps_every_argument():
    sae = gsl.GatedSAE(8, 16, 0.25, 0.5, None, name="seed", normalization_scale=2.5,
                       dtype="mixed_bfloat16", trainable=False)
    config = sae.get_config()
    assert config["normalization_scale"] == 2.5 and config["dtype"] == "mixed_bfloat16"
    clone = gsl.GatedSAE.from_config(config)
    assert clone.get_config() == config
    assert clone.decoder.dtype_policy.name == "mixed_bfloat16" and not clone.trainable
    # A config written before these keys existed loads with their defaults.
    old = {key: config[key] for key in ("name", "input_dim", "encoding_dim",
                                        "lambda_sparse", "aux_weight", "clip_norm")}
    clone = gsl.GatedSAE.from_config(old)
    assert clone.normalization_scale is None and clone.trainable
    assert clone.decoder.dtype_policy.name == keras.config.dtype_policy().name


def test_encode_and_decode_check_in_memory_input():
    sae = gsl.GatedSAE(8, 16)
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    x[3, 2] = np.nan
    # NaN used to give all-zero latents, as if nothing fired.
    for bad in (x, keras.ops.convert_to_tensor(x)):
        with pytest.raises(ValueError, match=r"`x` contains NaN or Inf in 1 of 5 rows "
                                             r"\(first at row 3\)"):
            sae.encode(bad)
    with pytest.raises(ValueError, match=r"`x` must have 8 features.*x\.shape=\(5, 6\)"):
        sae.encode(x[:, :6])
    with pytest.raises(ValueError, match="`x` must be a 2-D array"):
        sae.encode(x[0])
    with pytest.raises(TypeError, match="`x` must have a floating dtype"):
        sae.encode(np.ones((2, 8), "int32"))
    f = np.abs(np.random.default_rng(1).normal(size=(4, 16))).astype("float32")
    assert tuple(sae.decode(f).shape) == (4, 8)
    f[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"`f` contains NaN or Inf in 1 of 4 rows"):
        sae.decode(f, stop_grad=True)
    with pytest.raises(ValueError, match=r"`f` must be a 2-D array of latents of shape "
                                         r"\(num_examples, 16\).*f\.shape=\(2, 8\)"):
        sae.decode(np.zeros((2, 8), "float32"))
    with pytest.raises(TypeError, match="`f` must have a floating dtype"):
        sae.decode(np.ones((2, 16), "int64"))


def test_symbolic_input_passes_unchecked():
    sae = gsl.GatedSAE(8, 16)
    codes, _, _ = sae.encode(keras.Input((8,)))
    assert isinstance(codes, keras.KerasTensor) and tuple(codes.shape) == (None, 16)
    assert tuple(sae.decode(keras.Input((16,))).shape) == (None, 8)
    x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(lambda v: sae.decode(sae.encode(v)[0]))
    elif keras.backend.backend() == "jax":
        import jax

        compiled = jax.jit(lambda v: sae.decode(sae.encode(v)[0]))
    else:
        pytest.skip("no compiled function on this backend")
    np.testing.assert_allclose(compiled(x), sae.decode(sae.encode(x)[0]), rtol=1e-5,
                               atol=1e-6)


def test_encode_and_decode_match_the_model(trained, digits):
    x = digits[0][:16]
    codes, pi_gate, relu_pi_gate = trained.encode(x)
    outputs = trained.predict_on_batch(x)
    np.testing.assert_allclose(codes, outputs["latents"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pi_gate, outputs["gating_pre_activation"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(relu_pi_gate, np.maximum(pi_gate, 0))
    np.testing.assert_allclose(trained.decode(codes), outputs["reconstruction"],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(trained.decode(relu_pi_gate, stop_grad=True),
                               outputs["aux_reconstruction"], rtol=1e-5, atol=1e-5)


def test_set_lambda_takes_effect_at_the_next_step_also_mid_fit():
    x = np.tile(np.random.default_rng(0).normal(size=(16, 8)).astype("float32"), (4, 1))
    sae = gsl.GatedSAE(8, 16, lambda_sparse=0.1)
    seen = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: batch == 2 and sae.set_lambda(0.3),
        on_train_batch_end=lambda batch, logs: seen.append(logs["sparsity"]))
    sae.compile(optimizer=keras.optimizers.SGD(0.0))
    sae.fit(x, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[callback])
    s = seen[0]  # four identical batches; running means of the sparsity term
    assert s > 0
    np.testing.assert_allclose(seen, [s, s, 5 * s / 3, 2 * s], rtol=1e-5)
    assert sae.lambda_sparse == pytest.approx(0.3)


def test_the_published_api_is_fenced_in_one_module():
    from gated_sae_layers.compat import gated_sae_tf

    assert set(gated_sae_tf.__all__) == {
        "GatedSAE", "WarmupCosineDecay", "sparsity_report", "decoder_sharpness",
        "plot_decoder_gallery", "plot_feature_gallery"}
    for name in gated_sae_tf.__all__:
        assert getattr(gsl, name) is getattr(gated_sae_tf, name)
    # `set_lambda` is the seed's name, on `GatedSAE` only.
    assert not hasattr(gsl.SparseAutoencoder, "set_lambda")


def test_clip_norm_goes_to_the_optimizer_unless_it_clips_already():
    sae = gsl.GatedSAE(4, 8, clip_norm=0.5)
    sae.compile(optimizer="adam")
    assert sae.optimizer.global_clipnorm == 0.5
    sae = gsl.GatedSAE(4, 8, clip_norm=0.5)
    sae.compile(optimizer=keras.optimizers.Adam(clipvalue=0.1))
    assert sae.optimizer.global_clipnorm is None and sae.optimizer.clipvalue == 0.1


def test_sparsity_report_has_the_seed_keys(trained, digits):
    x = digits[0]
    report = gsl.sparsity_report(trained, x, batch_size=100, k=5)
    assert set(report) == SEED_REPORT_KEYS
    codes = np.asarray(trained.encode(x)[0])
    l0 = (codes > 0).sum(1)
    assert report["l0_mean"] == pytest.approx(l0.mean())
    assert report["l0_median"] == np.median(l0)
    assert report["alive"] + report["dead"] == report["n_features"] == 128
    assert report["alive"] == int((codes.max(0) > 0).sum())
    assert report["topk"] == 5
    mass = np.sort(codes.sum(0))[::-1]
    assert report["topk_share"] == pytest.approx(mass[:5].sum() / mass.sum(), rel=1e-4)
    # A trained SAE is genuinely sparse on these digits.
    assert report["l0_mean"] < 0.25 * 128


def test_decoder_sharpness_is_fisher_kurtosis(trained):
    per_feature, mean = gsl.decoder_sharpness(trained)
    expected = scipy.stats.kurtosis(np.asarray(trained.W_dec, "float64"), axis=1)
    np.testing.assert_allclose(per_feature, expected, rtol=1e-8)
    assert mean == pytest.approx(expected.mean())


def test_analysis_extras(trained, digits):
    x = digits[0]
    density = gsl.feature_density(trained, x)
    codes = np.asarray(trained.encode(x)[0])
    np.testing.assert_allclose(density, (codes > 0).mean(0))
    recon = np.asarray(trained.decode(codes), "float64")
    gamma = (recon ** 2).sum() / (recon * x).sum()
    assert gsl.relative_reconstruction_bias(trained, x) == pytest.approx(gamma, rel=1e-4)


def test_plots_take_the_image_shape(trained, digits, tmp_path):
    x, labels = digits
    codes = np.asarray(trained.encode(x)[0])
    fig = gsl.plot_decoder_gallery(trained, codes, top_n=4, image_shape=(8, 8))
    assert len(fig.axes) == 4
    fig = gsl.plot_feature_gallery(trained, codes, x, labels, [str(i) for i in range(10)],
                                   top_features=3, top_images=4, image_shape=(8, 8))
    assert len(fig.axes) == 3 * 6
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "MONO" in texts or "POLY" in texts
    fig.savefig(tmp_path / "gallery.png")
    assert (tmp_path / "gallery.png").stat().st_size > 1000
    gsl.plot_feature_density(gsl.feature_density(trained, x)).savefig(tmp_path / "d.png")
    with pytest.raises(ValueError, match="image_shape"):
        gsl.plot_decoder_gallery(trained, codes, image_shape=(28, 28))
    with pytest.raises(ValueError, match="codes"):
        gsl.plot_decoder_gallery(trained, codes[:, :5], image_shape=(8, 8))
