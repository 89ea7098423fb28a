"""Mixed precision (`"mixed_bfloat16"`): what stays float32, and float32 agreement.

Under the policy the layers compute in bfloat16 and hand bfloat16 outputs
to float32 loss terms and metrics; variables, optimizer state, the
decoder's unit-norm constraint, the JumpReLU and BatchTopK thresholds and
the parallel-gradient projection stay float32 (`docs/mixed_precision.md`).

`test_training_agrees_with_float32` trains the same SAE (same initial
weights, same batches) in float32 and in mixed bfloat16 on sklearn's
digits (the first 1,792 of 1,797 shuffled rows, 64 features scaled to
[0, 1]; 128 latents, batch 128, Adam(3e-3), 8 epochs) and asks the two to
agree within `REL_TOL` = 5% (relative) on the final training FVU and L0,
the inference FVU and L0 on all rows, and the loss of every epoch.

Measured (this setup, seeds 0-2, gated, TopK, BatchTopK and JumpReLU, TF
2.21 and JAX 0.10 on CPU, 24 pairs): the largest gaps were 1.1% (FVU,
BatchTopK inference), 1.1% (L0, BatchTopK inference) and 0.9% (one
epoch's loss); most were 0.1-0.5%. Final FVU about 0.09 (gated, L0 32),
0.18 (TopK/BatchTopK, k = 8) and 0.10 (JumpReLU, L0 24). 5% leaves room
for other seeds and library versions and still catches a real break:
before the BatchTopK threshold was kept in float32, its running average
froze in bfloat16 and the BatchTopK pair missed by 26-33% (inference
FVU) and 23-28% (inference L0) on TF and JAX.
"""

import keras
import numpy as np
import pytest
from keras import ops
from sklearn.datasets import load_digits

from gated_sae_layers import losses
from gated_sae_layers.layers import BatchTopKEncoder, JumpReLUEncoder, UnitNormDecoder
from gated_sae_layers.models.builders import build_sae
from tests.backend_grad import gradients
from tests.harness import dtype_policy_scope

MIXED = "mixed_bfloat16"
REL_TOL = 0.05

ARCHITECTURES = {
    "gated": {"sparsity_coefficient": 0.3},
    "relu": {"sparsity_coefficient": 0.1, "weight_by_decoder_norm": True},
    "topk": {"k": 8, "k_aux": 32, "dead_steps_threshold": 50},
    "batch_topk": {"k": 8, "k_aux": 32, "dead_steps_threshold": 50},
    "jumprelu": {"sparsity_coefficient": 0.3, "initial_threshold": 0.1, "bandwidth": 0.1},
    "matryoshka": {"k": 8, "prefix_sizes": [16, 64], "k_aux": 32,
                   "dead_steps_threshold": 50},
}


def _dtype(tensor):
    return keras.backend.standardize_dtype(tensor.dtype)


def _float_dtypes(variables):
    return {v.path: v.dtype for v in variables if keras.backend.is_float_dtype(v.dtype)}


def _bf16_values(array):
    """`array` rounded to bfloat16, as float32 (exact in both)."""
    rounded = ops.cast(ops.cast(array, "bfloat16"), "float32")
    return np.asarray(ops.convert_to_numpy(rounded))


@pytest.fixture(scope="module")
def digits():
    x = load_digits().data.astype("float32") / 16.0
    # 1,792 = 14 batches of 128: no ragged last batch, so JAX compiles one step.
    return x[np.random.default_rng(0).permutation(len(x))][:1792]


# -------------------------------------------------------------- the builders
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_builders_pass_the_dtype_policy_to_every_layer(architecture):
    model = build_sae(architecture, 64, 128, dtype=MIXED, **ARCHITECTURES[architecture])
    policies = {layer.dtype_policy.name for layer in model.layers
                if not isinstance(layer, keras.layers.InputLayer)}
    assert policies == {MIXED}
    assert set(_float_dtypes(model.variables).values()) == {"float32"}
    outputs = model.predict_on_batch(np.random.default_rng(0).random((4, 64), "float32"))
    assert {str(v.dtype) for v in outputs.values()} == {"bfloat16"}
    assert {loss.dtype for loss in model.loss_terms.values()} == {"float32"}
    assert set(_float_dtypes(model.metrics_variables).values()) == {"float32"}


def test_global_policy_reaches_every_layer():
    with dtype_policy_scope(MIXED):
        model = build_sae("gated", 8, 16, sparsity_coefficient=0.1)
        assert {layer.dtype_policy.name for layer in model.layers[1:]} == {MIXED}
        assert model.loss_terms["reconstruction"].dtype == "float32"
    # The float32 default comes back after the scope.
    assert build_sae("gated", 8, 16, sparsity_coefficient=0.1).decoder.compute_dtype == \
        "float32"


def test_mixed_model_saves_and_reloads_with_its_policy(digits, tmp_path):
    model = build_sae("batch_topk", 64, 32, dtype=MIXED, **ARCHITECTURES["batch_topk"])
    model.encoder.inference_threshold.assign(0.123456789)  # not a bfloat16 value
    path = str(tmp_path / "mixed.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.encoder.dtype_policy.name == MIXED
    assert loaded.encoder.inference_threshold.dtype == "float32"
    assert float(loaded.encoder.inference_threshold) == float(np.float32(0.123456789))
    expected = model.predict_on_batch(digits[:64])
    actual = loaded.predict_on_batch(digits[:64])
    for name in expected:
        np.testing.assert_array_equal(np.asarray(actual[name], "float32"),
                                      np.asarray(expected[name], "float32"))


# ---------------------------------------- the pieces that must stay float32
@pytest.mark.parametrize("function, arguments", [
    (losses.squared_error, 2), (losses.l1_of_relu, 1), (losses.l1_norm, 1),
    (losses.active_count, 1), (losses.squared_norm, 1)])
def test_pure_loss_functions_reduce_in_float32(function, arguments):
    rng = np.random.default_rng(0)
    values = [_bf16_values(rng.uniform(-1, 1, (3, 32768)).astype("float32"))
              for _ in range(arguments)]
    result = function(*[ops.cast(v, "bfloat16") for v in values])
    assert _dtype(result) == "float32"
    expected = function(*[v.astype("float64") for v in values])
    np.testing.assert_allclose(ops.convert_to_numpy(result),
                               ops.convert_to_numpy(expected), rtol=1e-5)


def test_loss_classes_stay_float32_under_the_policy():
    latents = ops.cast(np.full((2, 32768), 0.1, "float32"), "bfloat16")
    with dtype_policy_scope(MIXED):
        for loss in (losses.ReconstructionLoss(), losses.SparsityPenalty(1.0),
                     losses.AuxReconstruction(1.0), losses.L1Penalty(1.0),
                     losses.L0Penalty(1.0), losses.AuxKLoss(1.0)):
            assert loss.dtype == "float32"
            value = loss(ops.zeros_like(latents), latents)
            assert _dtype(value) == "float32"
            assert np.isfinite(float(value))


def test_batch_topk_running_threshold_is_averaged_in_float32():
    # Each step moves the average by at most 0.01 * 0.1 = 0.1% of its value,
    # below half a bfloat16 step (0.2%): a bfloat16 read froze it at 1.0.
    encoder = BatchTopKEncoder(2, k=1, threshold_momentum=0.99, dtype=MIXED)
    encoder.build((None, 2))
    encoder.kernel.assign(np.eye(2, dtype="float32"))
    encoder.inference_threshold.assign(1.0)
    x = np.array([[1.1, 0.0], [0.0, 2.0]], "float32")  # smallest kept: bf16(1.1)
    for _ in range(20):
        encoder(x, training=True)
    smallest = float(_bf16_values(np.float32(1.1)))
    expected = smallest - (smallest - 1.0) * 0.99 ** 20
    assert encoder.inference_threshold.dtype == "float32"
    np.testing.assert_allclose(float(encoder.inference_threshold), expected, rtol=1e-5)
    # Inference compares the bfloat16 activations with the float32 threshold.
    encoder.inference_threshold.assign(1.0390625 + 1e-4)  # a bfloat16 value plus a bit
    latents = encoder(np.array([[1.0390625, 1.046875]], "float32"))["latents"]
    np.testing.assert_array_equal(np.asarray(latents, "float32"), [[0.0, 1.046875]])


def test_jumprelu_threshold_gradient_is_summed_in_float32():
    eps, rows = 0.1, 4096
    theta = np.linspace(0.3, 0.7, 8).astype("float32")
    x = _bf16_values(np.random.default_rng(0).uniform(0, 1, (rows, 8)).astype("float32"))
    # Keep clear of the rectangle's edges, where rounding decides membership.
    x = x[np.all(np.abs(np.abs(x - theta) / eps - 0.5) > 1e-2, axis=1)]
    encoder = JumpReLUEncoder(8, bandwidth=eps, dtype=MIXED)
    encoder.build((None, 8))
    encoder.kernel.assign(np.eye(8, dtype="float32"))  # z = x exactly in bfloat16
    encoder.log_threshold.assign(np.log(theta))
    assert encoder.log_threshold.dtype == "float32"
    (grad,) = gradients(
        lambda: ops.sum(ops.cast(encoder(x)["active_latents"], "float32")),
        [encoder.log_threshold])
    theta64 = np.exp(np.asarray(encoder.log_threshold, "float64"))
    window = np.abs((x - theta64) / eps) < 0.5
    expected = theta64 * (-(1.0 / eps) * window).sum(0)  # chain rule through exp
    # A bfloat16 sum over the 4,000 rows was off by 3.4%.
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_parallel_gradient_is_projected_out_in_float32():
    decoder = UnitNormDecoder(64, 2048, remove_parallel_gradient=True, dtype=MIXED)
    decoder.build()
    rng = np.random.default_rng(1)
    f = rng.normal(size=(256, 64)).astype("float32")
    w = rng.normal(size=(256, 2048)).astype("float32")
    (grad,) = gradients(lambda: ops.sum(w * ops.cast(decoder(f), "float32")),
                        [decoder.kernel])
    kernel = np.asarray(decoder.kernel, "float64")
    grad = grad.astype("float64")
    cosine = np.abs((grad * kernel).sum(1)) / (
        np.linalg.norm(grad, axis=1) * np.linalg.norm(kernel, axis=1))
    # float32: about 1e-8; the projection in bfloat16 left 6e-4 (JAX) and
    # failed on TF with a dtype error.
    assert cosine.max() < 1e-6


# ------------------------------------------------ training agrees with float32
def _train(architecture, x, dtype=None, global_policy=None, epochs=8):
    with dtype_policy_scope(global_policy):
        keras.utils.set_random_seed(0)
        model = build_sae(architecture, x.shape[1], 128, dtype=dtype,
                          **ARCHITECTURES[architecture])
        model.decoder.bias.assign(x.mean(axis=0))
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        history = model.fit(x, batch_size=128, epochs=epochs, shuffle=False, verbose=0)
        # Inference on all rows (BatchTopK applies its threshold here).
        out = model.predict_on_batch(x)
    reconstruction = np.asarray(out["reconstruction"], "float64")
    evaluation = {
        "fvu": ((x - reconstruction) ** 2).sum() / ((x - x.mean(axis=0)) ** 2).sum(),
        "l0": (np.asarray(out["latents"], "float32") > 0).sum(axis=1).mean(),
        "reconstruction_dtype": str(out["reconstruction"].dtype),
    }
    return model, history.history, evaluation


def _relative_gap(a, b):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return np.max(np.abs(a - b) / np.abs(a))


@pytest.mark.parametrize("architecture, how", [
    ("gated", "global"), ("batch_topk", "dtype"), ("jumprelu", "dtype")])
def test_training_agrees_with_float32(architecture, how, digits):
    _, logs32, eval32 = _train(architecture, digits)
    if how == "global":  # keras.config.set_dtype_policy before building
        model, logs16, eval16 = _train(architecture, digits, global_policy=MIXED)
    else:  # build_sae(..., dtype="mixed_bfloat16")
        model, logs16, eval16 = _train(architecture, digits, dtype=MIXED)

    # Outputs are bfloat16; variables, optimizer state and logs are float32.
    assert eval16["reconstruction_dtype"] == "bfloat16"
    assert set(_float_dtypes(model.variables).values()) == {"float32"}
    assert set(_float_dtypes(model.optimizer.variables).values()) == {"float32"}
    assert set(_float_dtypes(model.metrics_variables).values()) == {"float32"}
    if hasattr(model.encoder, "steps_since_fired"):
        assert model.encoder.steps_since_fired.dtype == "int32"
    for name, values in logs16.items():
        assert np.all(np.isfinite(values)), name
    # The constraint renormalizes the float32 rows (bfloat16 would be ~4e-3 off).
    norms = np.linalg.norm(np.asarray(model.decoder.kernel, "float64"), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)

    gaps = {
        "fvu": _relative_gap(logs32["fvu"][-1], logs16["fvu"][-1]),
        "l0": _relative_gap(logs32["l0"][-1], logs16["l0"][-1]),
        "eval_fvu": _relative_gap(eval32["fvu"], eval16["fvu"]),
        "eval_l0": _relative_gap(eval32["l0"], eval16["l0"]),
        "loss_curve": _relative_gap(logs32["loss"], logs16["loss"]),
    }
    assert max(gaps.values()) < REL_TOL, gaps
    # It learned something: the loss fell.
    assert logs16["loss"][-1] < 0.6 * logs16["loss"][0]
