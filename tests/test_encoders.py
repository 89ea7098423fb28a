"""Every encoder layer: harness, the `SparseEncoder` protocol, numpy references, properties."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gated_sae_layers as gsl
from gated_sae_layers.layers.base import SparseEncoder
from tests.harness import DTYPE_POLICIES, run_layer_test
from tests.reference import gated_forward, randomize, weights_of

TOL = 1e-4

# (class, non-default arguments, output names, the input kernel's attribute,
#  the per-latent variables' attributes).
ENCODERS = [
    (gsl.GatedEncoder, {"latent_dim": 7, "kernel_initializer": "he_normal",
                        "bias_initializer": keras.initializers.Constant(0.1)},
     ("latents", "gating_pre_activation"), "gate_kernel",
     ("gate_bias", "magnitude_bias", "magnitude_log_scale")),
    (gsl.ReLUEncoder, {"latent_dim": 7, "kernel_initializer": "he_normal",
                       "bias_initializer": keras.initializers.Constant(0.1)},
     ("latents",), "kernel", ("bias",)),
    (gsl.TopKEncoder, {"latent_dim": 7, "k": 3, "k_aux": 2, "dead_steps_threshold": 5,
                       "kernel_initializer": "he_normal"},
     ("latents", "aux_latents"), "kernel", ("bias", "steps_since_fired")),
    (gsl.BatchTopKEncoder, {"latent_dim": 7, "k": 2, "k_aux": 3, "dead_steps_threshold": 4,
                            "threshold_momentum": 0.9, "bias_initializer": "ones"},
     ("latents", "aux_latents"), "kernel", ("bias", "steps_since_fired")),
    (gsl.JumpReLUEncoder, {"latent_dim": 7, "initial_threshold": 0.01, "bandwidth": 0.05,
                           "kernel_initializer": "he_normal"},
     ("latents", "active_latents"), "kernel", ("bias", "log_threshold")),
]
IDS = [case[0].__name__ for case in ENCODERS]
# (trainable, non-trainable) weights of each encoder: the kernel and bias
# (the gated encoder: the gate's kernel and bias, the magnitude's scale and
# bias), plus the non-trainable dead-latent counter and BatchTopK threshold.
WEIGHT_COUNTS = {gsl.GatedEncoder: (4, 0), gsl.ReLUEncoder: (2, 0),
                 gsl.TopKEncoder: (2, 1), gsl.BatchTopKEncoder: (2, 2),
                 gsl.JumpReLUEncoder: (3, 0)}


@pytest.mark.parametrize("dtype_policy", DTYPE_POLICIES)
@pytest.mark.parametrize("layer_cls, kwargs, names, kernel, per_latent", ENCODERS, ids=IDS)
def test_encoder_harness(layer_cls, kwargs, names, kernel, per_latent, dtype_policy):
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    trainable, non_trainable = WEIGHT_COUNTS[layer_cls]
    layer = run_layer_test(layer_cls, kwargs, x,
                           expected_output_shape={name: (6, 7) for name in names},
                           dtype_policy=dtype_policy,
                           expected_num_trainable_weights=trainable,
                           expected_num_non_trainable_weights=non_trainable)
    if hasattr(layer, "steps_since_fired"):  # the dead-latent counter stays int32
        assert layer.steps_since_fired.dtype == "int32"


@pytest.mark.parametrize("layer_cls, kwargs, names, kernel, per_latent", ENCODERS, ids=IDS)
def test_every_encoder_exposes_the_protocol(layer_cls, kwargs, names, kernel, per_latent):
    defaults = {key: value for key, value in kwargs.items()
                if key not in ("kernel_initializer", "bias_initializer")}
    encoder = layer_cls(**defaults)
    out = encoder(np.ones((3, 5), "float32"))
    assert encoder.output_names() == names == tuple(out)
    assert tuple(encoder.compute_output_shape((3, 5))) == names
    assert encoder.input_kernel is getattr(encoder, kernel)
    assert tuple(encoder.input_kernel.shape) == (5, 7)
    parameters = encoder.latent_parameters()
    assert [v.name for v, _ in parameters] == [getattr(encoder, a).name for a in per_latent]
    # Complete: every other (latent_dim,) variable is listed ...
    listed = {id(v) for v, _ in parameters}
    assert all(id(v) in listed for v in encoder.variables
               if tuple(v.shape) == (7,))
    # ... and the reset value is what a fresh encoder starts from.
    for variable, value in parameters:
        np.testing.assert_allclose(np.asarray(variable), value, rtol=1e-6)


def test_the_protocol_says_what_a_new_encoder_must_define():
    class Incomplete(SparseEncoder):
        def call(self, inputs):
            return {"latents": inputs}

    encoder = Incomplete(4)
    assert encoder.output_names() == ("latents",)
    with pytest.raises(NotImplementedError, match="Incomplete must define `input_kernel`"):
        encoder.input_kernel
    with pytest.raises(NotImplementedError, match="latent_parameters"):
        encoder.latent_parameters()


def test_gated_forward_matches_numpy_reference():
    model = gsl.build_gated_sae(6, 12, sparsity_coefficient=0.1)
    randomize(model, seed=3)
    x = np.random.default_rng(4).normal(size=(32, 6)).astype("float32")
    expected = gated_forward(x, **weights_of(model))
    outputs = model.predict_on_batch(x)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-5)
    # The random weights exercise both sides of the gate.
    assert 0 < (expected["latents"] > 0).mean() < 1


def test_gated_hand_set_weights_give_exact_outputs():
    encoder = gsl.GatedEncoder(2)
    encoder.build((None, 2))
    encoder.gate_kernel.assign([[1.0, 0.0], [0.0, 1.0]])
    encoder.gate_bias.assign([0.0, -1.0])
    encoder.magnitude_log_scale.assign([np.log(2.0), 0.0])
    encoder.magnitude_bias.assign([-1.0, 5.0])
    out = encoder(np.array([[3.0, 0.5], [-1.0, 2.0]], "float32"))
    # Row 0: pi_gate = [3, -0.5] -> gate [1, 0]; f_mag = relu([6-1, 0.5+5]).
    # Row 1: pi_gate = [-1, 1]   -> gate [0, 1]; f_mag = relu([-3, 7]).
    np.testing.assert_allclose(out["gating_pre_activation"], [[3.0, -0.5], [-1.0, 1.0]])
    np.testing.assert_allclose(out["latents"], [[5.0, 0.0], [0.0, 7.0]])


# ---------------------------------------------------------------- properties
def _randomized(encoder, x, seed):
    """`encoder` built for `x`, with standard-normal trainable weights."""
    encoder.build(x.shape)
    rng = np.random.default_rng(seed)
    for variable in encoder.trainable_weights:
        variable.assign(rng.normal(0, 1, tuple(variable.shape)).astype("float32"))
    return encoder


def _z(layer, x):
    return x.astype("float64") @ np.asarray(layer.kernel, "float64") + np.asarray(
        layer.bias, "float64")


@st.composite
def encoder_case(draw):
    batch = draw(st.integers(1, 9))
    input_dim = draw(st.integers(1, 8))
    latent_dim = draw(st.integers(1, 16))
    k = draw(st.integers(1, latent_dim))
    elements = st.floats(-3, 3, width=32, allow_subnormal=False)
    x = draw(hnp.arrays("float32", (batch, input_dim), elements=elements))
    return x, latent_dim, k, draw(st.integers(0, 2**16))


@given(encoder_case())
def test_gate_semantics_and_shapes(case):
    x, latent_dim, _, seed = case
    encoder = _randomized(gsl.GatedEncoder(latent_dim), x, seed)
    out = encoder(x)
    latents = np.asarray(out["latents"])
    pre = np.asarray(out["gating_pre_activation"])
    assert latents.shape == pre.shape == (x.shape[0], latent_dim)
    assert np.all(latents >= 0)
    assert np.all(latents[pre <= 0] == 0)


def _check_top(kept_values, dropped_values):
    if kept_values.size and dropped_values.size:
        assert kept_values.min() >= dropped_values.max() - TOL


@settings(max_examples=min(12, settings.default.max_examples))
@given(encoder_case())
def test_topk_keeps_the_k_largest(case):
    x, latent_dim, k, seed = case
    encoder = _randomized(gsl.TopKEncoder(latent_dim, k), x, seed)
    latents = np.asarray(encoder(x)["latents"])
    z = _z(encoder, x)
    assert latents.shape == (x.shape[0], latent_dim)
    assert np.all(latents >= 0)
    nonzero = latents > 0
    assert np.all(nonzero.sum(1) <= k)
    assert np.all(nonzero.sum(1) >= np.minimum(k, (z > TOL).sum(1)))
    np.testing.assert_allclose(latents[nonzero], z[nonzero], rtol=TOL, atol=TOL)
    for row in range(len(x)):
        _check_top(z[row][nonzero[row]], z[row][~nonzero[row]])


@settings(max_examples=min(8, settings.default.max_examples))
@given(encoder_case(), st.floats(0.01, 2.0))
def test_batch_topk_training_budget_and_inference_threshold(case, threshold):
    x, latent_dim, k, seed = case
    encoder = _randomized(gsl.BatchTopKEncoder(latent_dim, k), x, seed)
    a = np.maximum(_z(encoder, x), 0.0)
    latents = np.asarray(encoder(x, training=True)["latents"])
    nonzero = latents > 0
    assert nonzero.sum() <= x.shape[0] * k
    assert nonzero.sum() >= min(x.shape[0] * k, (a > TOL).sum())
    np.testing.assert_allclose(latents[nonzero], a[nonzero], rtol=TOL, atol=TOL)
    _check_top(a[nonzero], a[~nonzero])
    if nonzero.any():  # the first batch sets the threshold to its smallest kept value
        np.testing.assert_allclose(float(encoder.inference_threshold),
                                   latents[nonzero].min(), rtol=1e-6)
    encoder.inference_threshold.assign(threshold)
    inference = np.asarray(encoder(x, training=False)["latents"])
    clear = np.abs(a - threshold) > TOL
    expected = np.where(a > threshold, a, 0.0)
    np.testing.assert_allclose(inference[clear], expected[clear], rtol=TOL, atol=TOL)


@settings(max_examples=min(12, settings.default.max_examples))
@given(encoder_case())
def test_jumprelu_zero_below_threshold_identity_above(case):
    x, latent_dim, _, seed = case
    encoder = _randomized(gsl.JumpReLUEncoder(latent_dim), x, seed)
    out = encoder(x)
    latents, active = np.asarray(out["latents"]), np.asarray(out["active_latents"])
    z, theta = _z(encoder, x), np.asarray(encoder.learned_threshold, "float64")
    assert latents.shape == active.shape == (x.shape[0], latent_dim)
    clear = np.abs(z - theta) > TOL
    assert np.all(latents[clear & (z <= theta)] == 0)
    np.testing.assert_allclose(latents[clear & (z > theta)], z[clear & (z > theta)],
                               rtol=TOL, atol=TOL)
    np.testing.assert_array_equal(active[clear], (z > theta)[clear])


def test_the_two_thresholds_have_distinct_names():
    jumprelu, batch_topk = gsl.JumpReLUEncoder(3, initial_threshold=0.5), \
        gsl.BatchTopKEncoder(3, k=1)
    x = np.ones((2, 4), "float32")
    jumprelu(x), batch_topk(x)
    np.testing.assert_allclose(jumprelu.learned_threshold, [0.5] * 3, rtol=1e-6)
    assert not hasattr(jumprelu, "threshold") and not hasattr(batch_topk, "threshold")
    # The variables keep their saved names (files, layout maps).
    assert batch_topk.inference_threshold.path.endswith("/threshold")
    assert jumprelu.log_threshold.path.endswith("/log_threshold")


@pytest.mark.parametrize("batch, tokens, latent_dim", [(1, 1, 1), (3, 4, 12), (5, 2, 7)])
def test_encoders_accept_any_batch_and_token_axis(batch, tokens, latent_dim):
    x = np.random.default_rng(batch).normal(size=(batch, tokens, 3)).astype("float32")
    k = min(2, latent_dim)
    for encoder in (gsl.GatedEncoder(latent_dim), gsl.ReLUEncoder(latent_dim),
                    gsl.TopKEncoder(latent_dim, k), gsl.JumpReLUEncoder(latent_dim)):
        out = encoder(x)
        assert {tuple(v.shape) for v in out.values()} == {(batch, tokens, latent_dim)}
    latents = np.asarray(gsl.BatchTopKEncoder(latent_dim, k)(x, training=True)["latents"])
    assert (latents > 0).sum() <= batch * tokens * k


# -------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "layer_cls, kwargs, error, match",
    [
        (gsl.GatedEncoder, {"latent_dim": 0}, ValueError, "latent_dim"),
        (gsl.GatedEncoder, {"latent_dim": -3}, ValueError, "Received: latent_dim=-3"),
        (gsl.GatedEncoder, {"latent_dim": 2.5}, TypeError, "positive integer"),
        (gsl.ReLUEncoder, {"latent_dim": True}, TypeError, "positive integer"),
        (gsl.TopKEncoder, {"latent_dim": 4, "k": 5}, ValueError,
         r"`k` must be at most `latent_dim` \(4\).*Received: k=5"),
        (gsl.BatchTopKEncoder, {"latent_dim": 4, "k": 2, "threshold_momentum": 1.0},
         ValueError, "threshold_momentum"),
        (gsl.JumpReLUEncoder, {"latent_dim": 4, "initial_threshold": 0.0}, ValueError,
         "initial_threshold"),
    ],
)
def test_encoder_bad_arguments(layer_cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        layer_cls(**kwargs)


@pytest.mark.parametrize("layer_cls", [gsl.GatedEncoder, gsl.ReLUEncoder])
def test_encoder_bad_inputs(layer_cls):
    encoder = layer_cls(4)
    encoder(np.ones((2, 3), "float32"))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 3"):
        encoder(np.ones((2, 5), "float32"))
    with pytest.raises(ValueError, match="ndim"):
        encoder(np.ones((3,), "float32"))
    with pytest.raises(TypeError, match="floating-point.*int32"):
        encoder(np.ones((2, 3), "int32"))
