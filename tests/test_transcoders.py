"""Transcoders, skip transcoders and crosscoders: math against numpy, training,
saving and the errors, on both backends.

The numpy references are those of the papers: a transcoder's encoder reads
`x` uncentered and `y_hat = f W_dec + b_dec + x W_skip` (Dunefsky et al.
2024; Paulo et al. 2025); a crosscoder's penalty weights each latent by the
sum of its per-layer decoder norms (Lindsey et al. 2024).
"""


import keras
import numpy as np
import pytest
from keras import ops
from sklearn.datasets import load_digits

import gated_sae_layers as gsl
from tests.backend_grad import gradients
from tests.harness import ARCHITECTURES, architecture_kwargs, dtype_policy_scope
from tests.reference import decode, pre_activation, topk_latents

INPUT_DIM, OUTPUT_DIM, LATENT_DIM = 6, 5, 24


def _transcoder(architecture, skip, **overrides):
    return gsl.build_transcoder(
        architecture, INPUT_DIM, OUTPUT_DIM, LATENT_DIM, skip=skip,
        **architecture_kwargs(architecture, LATENT_DIM, **overrides))


def _randomize(model, seed=0):
    """Non-trivial weights everywhere (decoder rows unit norm, the skip included)."""
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        values = rng.normal(0, 0.5, tuple(variable.shape)).astype("float32")
        if variable.path.startswith("decoder") and variable.path.endswith("kernel"):
            values /= np.linalg.norm(values, axis=1, keepdims=True)
        variable.assign(values)


def _pairs(rows, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, INPUT_DIM)).astype("float32")
    mixing = rng.normal(size=(INPUT_DIM, OUTPUT_DIM))
    y = (np.maximum(x @ mixing, 0) + 0.3 * x[:, :OUTPUT_DIM]).astype("float32")
    return x, y


def _numpy(value):
    return np.asarray(ops.convert_to_numpy(ops.cast(value, "float32")), "float64")


# ------------------------------------------------------------- the forward
@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_transcoder_forward_matches_numpy(architecture, skip):
    """The encoder reads x itself (not x - b_dec) and the output is
    `f W_dec + b_dec (+ x W_skip)`, for every encoder of the kit."""
    model = _transcoder(architecture, skip)
    _randomize(model)
    x, _ = _pairs(16)
    out = model.predict_on_batch(x)
    assert out["reconstruction"].shape == (16, OUTPUT_DIM)
    latents = _numpy(model.encoder(x, training=False)["latents"])
    np.testing.assert_allclose(out["latents"], latents, rtol=1e-5, atol=1e-6)
    expected = decode(latents, _numpy(model.decoder.kernel), _numpy(model.decoder.bias))
    if skip:
        expected = expected + x.astype("float64") @ _numpy(model.get_layer("skip").kernel)
    else:
        assert not any(isinstance(layer, gsl.SkipConnection) for layer in model.layers)
    np.testing.assert_allclose(out["reconstruction"], expected, rtol=1e-4, atol=1e-5)
    assert model.is_transcoder
    assert (model.input_dim, model.output_dim) == (INPUT_DIM, OUTPUT_DIM)
    assert model.architecture["arguments"]["output_dim"] == OUTPUT_DIM
    assert model.architecture["arguments"]["skip"] is skip


def test_topk_transcoder_latents_are_the_numpy_topk_of_the_uncentered_input():
    model = _transcoder("topk", skip=True)
    _randomize(model, seed=3)
    x, _ = _pairs(12, seed=4)
    encoder = model.encoder
    z = pre_activation(x, _numpy(encoder.input_kernel), _numpy(encoder.bias),
                       np.zeros(INPUT_DIM))
    np.testing.assert_allclose(model.predict_on_batch(x)["latents"],
                               topk_latents(z, 3), rtol=1e-5, atol=1e-6)


def test_an_sae_is_unchanged_by_the_transcoder_machinery():
    """`build_sae` without `output_dim` still centers on b_dec and records
    no transcoder arguments (saved SAEs and their records stay as they were)."""
    model = gsl.build_topk_sae(INPUT_DIM, LATENT_DIM, k=3)
    assert not model.is_transcoder
    assert "output_dim" not in model.architecture["arguments"]
    _randomize(model)
    x, _ = _pairs(8)
    encoder = model.encoder
    z = pre_activation(x, _numpy(encoder.input_kernel), _numpy(encoder.bias),
                       _numpy(model.decoder.bias))
    np.testing.assert_allclose(model.predict_on_batch(x)["latents"],
                               topk_latents(z, 3), rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------- gradients
def _named(model):
    encoder = model.encoder
    return {"W_enc": encoder.input_kernel,
            "b_enc": encoder.bias if hasattr(encoder, "bias") else encoder.gate_bias,
            "W_dec": model.decoder.kernel, "b_dec": model.decoder.bias,
            "W_skip": model.get_layer("skip").kernel}


def test_skip_transcoder_reconstruction_gradients_match_numpy():
    """d/dW of `mean_b ||y - (f W_dec + b_dec + x W_skip)||^2`, f = TopK(x W_enc + b_enc)."""
    model = _transcoder("topk", skip=True)
    _randomize(model, seed=5)
    x, y = _pairs(10, seed=6)
    names = _named(model)
    loss = gsl.ReconstructionLoss()
    grads = dict(zip(names, gradients(lambda: loss(y, model(x)["reconstruction"]),
                                      list(names.values()))))
    w = {name: _numpy(variable) for name, variable in names.items()}
    x64 = x.astype("float64")
    z = x64 @ w["W_enc"] + w["b_enc"]
    f = topk_latents(z, 3)
    residual = y - (f @ w["W_dec"] + w["b_dec"] + x64 @ w["W_skip"])
    d_out = -2 * residual / len(x)
    d_pre = (d_out @ w["W_dec"].T) * (f > 0)
    expected = {"W_skip": x64.T @ d_out, "W_dec": f.T @ d_out, "b_dec": d_out.sum(0),
                "W_enc": x64.T @ d_pre, "b_enc": d_pre.sum(0)}
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_transcoder_auxk_term_is_the_papers_residual_loss():
    """`AuxKPrediction` + `AuxKTargetLoss` give `alpha ||e - e_hat||^2`,
    e = y - stop_gradient(y_hat): its value and its W_dec gradient match numpy,
    and nothing reaches b_dec or W_skip."""
    model = _transcoder("topk", skip=True, k_aux=4, dead_steps_threshold=1)
    _randomize(model, seed=7)
    x, y = _pairs(10, seed=8)
    model.encoder.steps_since_fired.assign(np.full((LATENT_DIM,), 5.0, "float32"))
    out = model(x, training=True)
    aux = model.loss_terms["aux_residual"]
    w = {name: _numpy(variable) for name, variable in _named(model).items()}
    e = y - _numpy(out["reconstruction"])
    z_aux = _numpy(out["aux_latents"])
    assert (z_aux > 0).any(axis=1).all()
    e_hat = z_aux @ w["W_dec"]
    alpha = float(ops.convert_to_numpy(aux.coefficient))
    np.testing.assert_allclose(float(aux(y, out["aux_residual"])),
                               alpha * np.mean(np.sum((e - e_hat) ** 2, -1)), rtol=1e-4)
    names = _named(model)

    def aux_loss():
        model.encoder.steps_since_fired.assign(np.full((LATENT_DIM,), 5.0, "float32"))
        return aux(y, model(x, training=True)["aux_residual"])

    grads = dict(zip(names, gradients(aux_loss, list(names.values()))))
    np.testing.assert_allclose(grads["W_dec"], z_aux.T @ (-2 * alpha * (e - e_hat) / len(x)),
                               rtol=1e-4, atol=1e-5)
    assert not np.any(grads["b_dec"]) and not np.any(grads["W_skip"])


def test_gated_skip_transcoders_aux_term_leaves_the_skip_alone():
    """The gated aux reconstruction decodes through a frozen decoder and a
    frozen skip (the paper's stop-gradients), and its value is numpy's."""
    model = _transcoder("gated", skip=True)
    _randomize(model, seed=9)
    x, y = _pairs(10, seed=10)
    names = _named(model)
    loss = model.loss_terms["aux_reconstruction"]
    grads = dict(zip(names, gradients(
        lambda: loss(y, model(x)["aux_reconstruction"]), list(names.values()))))
    assert not np.any(grads["W_skip"]) and not np.any(grads["W_dec"])
    assert not np.any(grads["b_dec"]), "a transcoder's encoder does not read b_dec"
    assert np.abs(grads["W_enc"]).max() > 0
    w = {name: _numpy(variable) for name, variable in names.items()}
    gate = np.maximum(x.astype("float64") @ w["W_enc"] + w["b_enc"], 0)
    expected = gate @ w["W_dec"] + w["b_dec"] + x.astype("float64") @ w["W_skip"]
    np.testing.assert_allclose(model.predict_on_batch(x)["aux_reconstruction"],
                               expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- crosscoders
def _block_norms(W_dec, num_layers):
    latent_dim = W_dec.shape[0]
    return np.linalg.norm(W_dec.reshape(latent_dim, num_layers, -1), axis=-1).T


def test_relu_crosscoder_penalty_and_its_gradient_match_numpy():
    """`lambda * mean_b sum_j f_j sum_l ||W_dec^l_j||`, and its W_dec gradient
    `lambda * mean_b f_j W_dec^l_j / ||W_dec^l_j||` per block."""
    num_layers, width, latent_dim, lam = 3, 4, 10, 0.3
    model = gsl.build_crosscoder(width, num_layers, latent_dim, sparsity_coefficient=lam)
    rng = np.random.default_rng(11)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0, 0.5, tuple(variable.shape)).astype("float32"))
    a = rng.normal(size=(9, num_layers * width)).astype("float32")
    out = model.predict_on_batch(a)
    W_dec, b_dec = _numpy(model.decoder.kernel), _numpy(model.decoder.bias)
    encoder = model.encoder
    f = np.maximum(pre_activation(a, _numpy(encoder.input_kernel), _numpy(encoder.bias),
                                  b_dec), 0)
    np.testing.assert_allclose(out["latents"], f, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["reconstruction"], decode(f, W_dec, b_dec),
                               rtol=1e-4, atol=1e-5)
    norms = _block_norms(W_dec, num_layers)
    np.testing.assert_allclose(gsl.crosscoder_decoder_norms(model), norms, rtol=1e-5)
    penalty = model.loss_terms["weighted_latents"]
    np.testing.assert_allclose(float(penalty(a, out["weighted_latents"])),
                               lam * np.mean(f @ norms.sum(0)), rtol=1e-4)
    (grad,) = gradients(lambda: penalty(a, model(a)["weighted_latents"]),
                        [model.decoder.kernel])
    # Only the penalty's path through the norms: hold f fixed.
    blocks = W_dec.reshape(latent_dim, num_layers, width)
    direction = blocks / np.linalg.norm(blocks, axis=-1, keepdims=True)
    through_norms = (lam * f.mean(0))[:, None, None] * direction
    # ... plus the path through f, which depends on W_dec only via b_dec: none.
    np.testing.assert_allclose(grad, through_norms.reshape(latent_dim, -1),
                               rtol=1e-4, atol=1e-6)


def test_crosscoder_logs_each_layers_fvu():
    num_layers, width = 2, 4
    model = gsl.build_crosscoder(width, num_layers, 16, architecture="topk", k=2)
    a = np.random.default_rng(12).normal(size=(64, num_layers * width)).astype("float32")
    a[:, width:] *= 3.0
    model.compile(keras.optimizers.Adam(1e-2))
    logs = model.evaluate(a, batch_size=64, verbose=0, return_dict=True)
    a_hat = model.predict(a, verbose=0)["reconstruction"].astype("float64")
    for layer in range(num_layers):
        block = slice(layer * width, (layer + 1) * width)
        fvu = (np.sum((a[:, block] - a_hat[:, block]) ** 2)
               / np.sum((a[:, block] - a[:, block].mean(0)) ** 2))
        np.testing.assert_allclose(logs[f"fvu_layer_{layer}"], fvu, rtol=1e-4)


def test_crosscoder_arguments_are_checked():
    with pytest.raises(ValueError, match="architecture"):
        gsl.build_crosscoder(4, 2, 8, architecture="gated", sparsity_coefficient=1.0)
    with pytest.raises(ValueError, match="sparsity_coefficient"):
        gsl.build_crosscoder(4, 2, 8)
    with pytest.raises(ValueError, match="takes `k`"):
        gsl.build_crosscoder(4, 2, 8, architecture="topk", sparsity_coefficient=1.0)
    with pytest.raises(ValueError, match="num_layers"):
        gsl.build_crosscoder(4, 0, 8, sparsity_coefficient=1.0)
    with pytest.raises(ValueError, match="crosscoder"):
        gsl.crosscoder_decoder_norms(gsl.build_topk_sae(4, 8, k=2))


# ---------------------------------------------------------------- training
@pytest.fixture(scope="module")
def digit_halves():
    """Real data: predict the lower half of an 8x8 digit from its upper half."""
    pixels = (load_digits().data / 16.0).astype("float32")
    return pixels[:, :32].copy(), pixels[:, 32:].copy()


def _held_out_fvu(model, x, y):
    y_hat = model.predict(x, verbose=0)["reconstruction"]
    return float(np.sum((y - y_hat) ** 2) / np.sum((y - y.mean(0)) ** 2))


def test_skip_transcoder_learns_the_lower_half_of_digits_with_every_callback(digit_halves):
    """A real fit on (inputs, targets): on held-out digits the skip
    transcoder predicts better than the best linear map (least squares), at
    L0 = k, with the kit's machinery acting (unit-norm rows, the resampler
    with targets, b_dec started at the targets' center)."""
    x, y = digit_halves
    train, test = slice(0, 1400), slice(1400, None)
    model = gsl.build_transcoder("topk", 32, 32, 128, skip=True, k=8)
    center = model.initialize_decoder_bias(y[train], method="mean")
    np.testing.assert_allclose(center, y[train].mean(0), rtol=1e-5, atol=1e-6)
    resampler = gsl.DeadLatentResampler(x[train][:512], check_every=40,
                                        targets=y[train][:512])
    model.compile(keras.optimizers.Adam(3e-3))
    history = model.fit(x[train], y[train], epochs=8, batch_size=64, verbose=0,
                        callbacks=[resampler, gsl.DecoderNormalizer()])
    assert history.history["l0"][-1] == pytest.approx(8.0)
    assert history.history["fvu"][-1] < history.history["fvu"][0]
    inputs = np.c_[x, np.ones(len(x))].astype("float64")
    linear = np.linalg.lstsq(inputs[train], y[train], rcond=None)[0]
    residual = y[test] - inputs[test] @ linear
    linear_fvu = np.sum(residual ** 2) / np.sum((y[test] - y[test].mean(0)) ** 2)
    assert _held_out_fvu(model, x[test], y[test]) < linear_fvu
    norms = np.linalg.norm(np.asarray(model.decoder.kernel), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-4)
    assert resampler.resampled, "the resampler ran on the transcoder"


def test_gated_transcoder_steered_by_target_l0(digit_halves):
    x, y = digit_halves
    model = gsl.build_transcoder("gated", 32, 32, 64, sparsity_coefficient=1e-4)
    model.initialize_decoder_bias(y, method="mean")
    model.compile(keras.optimizers.Adam(3e-3))
    before = model.sparsity_coefficient
    model.fit(x, y, epochs=2, batch_size=64, verbose=0,
              callbacks=[gsl.TargetL0(4.0, steps_per_update=4)])
    assert model.sparsity_coefficient > before, "TargetL0 raised lambda toward L0 4"


def test_sparse_path_trains_a_transcoder_as_the_dense_step_does():
    if keras.backend.backend() == "tensorflow":
        jit = {"jit_compile": True}
    else:
        jit = {}
    x, y = _pairs(96, seed=13)
    weights = {}
    for sparse in (False, True):
        keras.utils.set_random_seed(5)
        model = gsl.build_transcoder("topk", INPUT_DIM, OUTPUT_DIM, 64, skip=True, k=4)
        model.compile(keras.optimizers.Adam(1e-2), sparse=sparse, **jit)
        assert (model.sparse_plan is not None) is sparse
        model.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
        weights[sparse] = [np.asarray(v) for v in model.trainable_variables]
    for dense, sparse in zip(weights[False], weights[True]):
        np.testing.assert_allclose(sparse, dense, rtol=2e-4, atol=2e-4)


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="the device-resident fit is JAX's")
def test_device_resident_fit_of_pairs_equals_the_stock_loop():
    """On JAX, `fit(x, y)` of a transcoder trains with the pairs on the
    device (`[x | y]` side by side, one shuffle): the same weights as the
    stock Keras loop, step for step."""
    x, y = _pairs(96, seed=16)
    weights = {}
    for resident in (False, True):
        keras.utils.set_random_seed(6)
        model = gsl.build_transcoder("topk", INPUT_DIM, OUTPUT_DIM, 32, skip=True, k=4)
        model.compile(keras.optimizers.Adam(1e-2))
        history = model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0,
                            device_resident=resident)
        weights[resident] = [np.asarray(v) for v in model.trainable_variables]
        assert np.isfinite(history.history["fvu"]).all()
    for stock, resident in zip(weights[False], weights[True]):
        np.testing.assert_allclose(resident, stock, rtol=1e-5, atol=1e-6)
    model = gsl.build_transcoder("topk", INPUT_DIM, OUTPUT_DIM, 32, k=4)
    model.compile(keras.optimizers.Adam(1e-2))
    bad = y.copy()
    bad[5] = np.inf
    with pytest.raises(ValueError, match="NaN|Inf|non-finite"):
        model.fit(x, bad, epochs=1, verbose=0, device_resident=True)
    with pytest.raises(ValueError, match="same rows"):
        model.fit(x, y[:-1], epochs=1, verbose=0)


@pytest.mark.parametrize("builder", ["transcoder", "crosscoder"])
def test_mixed_bfloat16_keeps_float32_weights_and_trains(builder):
    x, y = _pairs(64, seed=14)
    with dtype_policy_scope("mixed_bfloat16"):
        if builder == "transcoder":
            model = gsl.build_transcoder("relu", INPUT_DIM, OUTPUT_DIM, 32,
                                         skip=True, sparsity_coefficient=1e-3)
            data = (x, y)
        else:
            model = gsl.build_crosscoder(3, 2, 32, sparsity_coefficient=1e-3)
            data = (x,)
        model.compile(keras.optimizers.Adam(1e-2))
        history = model.fit(*data, epochs=2, batch_size=16, verbose=0)
        out = model.predict_on_batch(x)
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32"
               for v in model.weights if "float" in str(v.dtype))
    assert keras.backend.standardize_dtype(out["reconstruction"].dtype) == "bfloat16"
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The same weights in float32 (whose math is numpy's, above) agree to
    # bfloat16's precision (ReLU: no latent flips on or off at a boundary).
    with dtype_policy_scope("float32"):
        if builder == "transcoder":
            reference = gsl.build_transcoder("relu", INPUT_DIM, OUTPUT_DIM, 32,
                                             skip=True, sparsity_coefficient=1e-3)
        else:
            reference = gsl.build_crosscoder(3, 2, 32, sparsity_coefficient=1e-3)
    reference.set_weights(model.get_weights())
    want = reference.predict_on_batch(x)["reconstruction"]
    got = np.asarray(out["reconstruction"], "float32")
    assert np.linalg.norm(got - want) <= 2e-2 * np.linalg.norm(want)


# ------------------------------------------------------------------ saving
# The `.keras` round trip in a fresh process (safe mode, exact outputs, the
# record kept) runs with every SAE variant's, in one new process:
# tests/test_serialization.py::test_every_variant_loads_in_a_fresh_process.


# -------------------------------------------------------------- bad input
def test_a_transcoder_refuses_to_train_without_its_targets():
    model = _transcoder("topk", skip=True)
    model.compile(keras.optimizers.Adam(1e-3))
    x, y = _pairs(16)
    with pytest.raises(ValueError, match=r"transcoder.*fit\(x=inputs, y=targets\)"):
        model.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=rf"\(batch_size, {OUTPUT_DIM}\)|{OUTPUT_DIM}"):
        model.fit(x, np.ones((16, OUTPUT_DIM + 1), "float32"), epochs=1, verbose=0)
    bad = y.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN|non-finite"):
        model.fit(x, bad, epochs=1, verbose=0)

    def unpaired():
        yield x[:8]

    with pytest.raises(ValueError, match="pairs"):
        model.fit(unpaired(), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="targets=y"):
        gsl.DeadLatentResampler(x, check_every=1).resample(model)


def test_transcoder_arguments_are_checked():
    with pytest.raises(ValueError, match="output_dim"):
        gsl.build_topk_sae(6, 16, k=2, skip=True)
    with pytest.raises(ValueError, match="output_dim"):
        gsl.build_transcoder("topk", 6, None, 16, k=2)
    with pytest.raises(TypeError, match="skip"):
        gsl.build_transcoder("relu", 6, 4, 16, skip="yes", sparsity_coefficient=1.0)
    with pytest.raises((TypeError, ValueError), match="output_dim"):
        gsl.build_transcoder("relu", 6, 0, 16, sparsity_coefficient=1.0)
    with pytest.raises(ValueError, match="one row per row"):
        gsl.DeadLatentResampler(np.ones((4, 6), "float32"), 1,
                                targets=np.ones((3, 4), "float32"))


def test_core_metrics_of_a_transcoder_measure_against_its_targets():
    """`evaluate_sae` / `core_metrics` compare a transcoder's prediction with
    `y`; without `targets` they raise (the widths may even agree, and an FVU
    against `x` would be silent nonsense)."""
    model = _transcoder("topk", skip=True)
    _randomize(model, seed=17)
    x, y = _pairs(40, seed=18)
    with pytest.raises(ValueError, match="Pass `targets=y`"):
        gsl.evaluate_sae(model, x)
    metrics = gsl.core_metrics(model, x, targets=y, batch_size=16)
    y_hat = model.predict_on_batch(x)["reconstruction"].astype("float64")
    fvu = np.sum((y - y_hat) ** 2) / np.sum((y - y.mean(0)) ** 2)
    np.testing.assert_allclose(metrics["fvu"], fvu, rtol=1e-5)
    assert np.isnan(metrics["encoder_decoder_cosine"]).all()
    with pytest.raises(ValueError, match="one target row per row"):
        gsl.core_metrics(model, x, targets=y[:-1])
    with pytest.raises(ValueError, match="`targets` are for a transcoder"):
        gsl.core_metrics(gsl.build_topk_sae(INPUT_DIM, 16, k=2), x, targets=y)
