"""Training on several devices gives the one-device result.

The backend and the device count are fixed when a process imports them, so
each engine runs in its own subprocess, once per module (the fixtures
`jax_results` and `tf_results`), and prints its results as JSON:

- JAX with 4 virtual CPU devices
  (`XLA_FLAGS=--xla_force_host_platform_device_count=4`): one device, then
  `keras.distribution.DataParallel` and `latent_parallel` on the meshes
  (1, 4) and (2, 2), for the gated SAE and the TopK SAE;
- TensorFlow with 2 logical CPU devices under
  `tf.distribute.MirroredStrategy`: the gated SAE and an SAE with a
  regularization loss, one device then mirrored.

The tests below compare those results. The layout map itself is checked in
this process, on every SAE variant of the kit.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers import distribution

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_DIM, LATENT_DIM = 16, 64
# Small, but every step and metric path runs: 4 steps an epoch, 2 epochs.
TRAINING = "ROWS, BATCH, EPOCHS = 256, 64, 2"

VARIANTS = {
    "gated": dict(sparsity_coefficient=1e-2),
    "relu": dict(sparsity_coefficient=1e-2),
    "jumprelu": dict(sparsity_coefficient=1e-2),
    "topk": dict(k=4, k_aux=8, dead_steps_threshold=2),
    "batch_topk": dict(k=4, k_aux=8, dead_steps_threshold=2),
    "matryoshka": dict(k=4, k_aux=8, dead_steps_threshold=2, prefix_sizes=[8, 32]),
}

_COMMON = f"""
import json, os, sys
import numpy as np
{TRAINING}
INPUT_DIM, LATENT_DIM = {INPUT_DIM}, {LATENT_DIM}
VARIANTS = {VARIANTS!r}
rng = np.random.default_rng(0)
# Correlated activations with a common offset, as real ones have.
X = (rng.normal(size=(ROWS, INPUT_DIM)) @ rng.normal(size=(INPUT_DIM, INPUT_DIM))
     * 0.3 + 1.0).astype("float32")

def summary(model, history):
    return {{
        "history": history.history,
        "weights": {{v.path: np.asarray(v, dtype="float64").tolist()
                    for v in model.weights}},
        "row_norms": np.linalg.norm(
            np.asarray(model.decoder.kernel), axis=1).tolist(),
    }}

def emit(results):
    print("RESULTS_JSON=" + json.dumps(results))
"""

JAX_SCRIPT = _COMMON + """
import jax
import keras
import gated_sae_layers as gsl
from gated_sae_layers.distribution import latent_parallel

assert jax.device_count() == 4, jax.devices()

def spec(variable):
    value = variable.value
    # One device: a SingleDeviceSharding, which has no spec.
    axes = list(getattr(value.sharding, "spec", ()))
    return axes + [None] * (len(value.shape) - len(axes))

def layouts(variables):
    return {v.path: {"spec": spec(v),
                     "shard": list(v.value.addressable_shards[0].data.shape)}
            for v in variables}

def train(architecture, distribution):
    keras.distribution.set_distribution(distribution)
    try:
        keras.utils.set_random_seed(1)
        model = gsl.build_sae(architecture, INPUT_DIM, LATENT_DIM,
                              **VARIANTS[architecture])
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        history = model.fit(X, batch_size=BATCH, epochs=EPOCHS, shuffle=False,
                            verbose=0)
        result = summary(model, history)
        result["layouts"] = layouts(model.weights)
        result["metric_layouts"] = layouts(model.metrics_variables)
        result["optimizer_layouts"] = layouts(model.optimizer.variables)
        return result
    finally:
        keras.distribution.set_distribution(None)

def error(function, **kwargs):
    try:
        function(**kwargs)
    except (TypeError, ValueError) as exception:
        return type(exception).__name__ + ": " + str(exception)
    return None

devices = keras.distribution.list_devices()
results = {"train": {}, "layouts": {}, "errors": {}}
results["train"]["gated"] = {
    "single": train("gated", None),
    "data_parallel": train("gated", keras.distribution.DataParallel(devices=devices)),
    "latent_1x4": train("gated", latent_parallel(latent_devices=4)),
    "latent_2x2": train("gated", latent_parallel(latent_devices=2, batch_devices=2)),
}
# A second variant, on the mesh that splits both the batch and the latents.
results["train"]["topk"] = {
    "single": train("topk", None),
    "latent_2x2": train("topk", latent_parallel(latent_devices=2, batch_devices=2)),
}
# Every variant's variables as laid out by the default latent_parallel().
keras.distribution.set_distribution(latent_parallel())
for architecture, kwargs in VARIANTS.items():
    model = gsl.build_sae(architecture, INPUT_DIM, LATENT_DIM, **kwargs)
    results["layouts"][architecture] = layouts(
        model.weights + model.metrics_variables)
keras.distribution.set_distribution(None)
results["errors"] = {
    "three_latent_devices": error(latent_parallel, latent_devices=3),
    "batch_devices_not_dividing": error(latent_parallel, batch_devices=3),
    "zero_batch_devices": error(latent_parallel, batch_devices=0),
    "float_latent_devices": error(latent_parallel, latent_devices=2.0),
}
emit(results)
"""

TF_SCRIPT = _COMMON + """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import gated_sae_layers as gsl

class BatchLogs(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.logs = []
    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(v) for k, v in logs.items()})

def build(architecture):
    if architecture != "regularized":
        return gsl.build_sae(architecture, INPUT_DIM, LATENT_DIM,
                             **VARIANTS[architecture])
    # A ReLU SAE whose latents carry an activity regularizer: a loss in
    # `model.losses` that every replica adds whole.
    inputs = keras.Input((INPUT_DIM,))
    decoder = gsl.UnitNormDecoder(LATENT_DIM, INPUT_DIM, name="decoder")
    latents = gsl.ReLUEncoder(LATENT_DIM, name="encoder")(
        decoder(inputs, mode="center"))["latents"]
    latents = keras.layers.ActivityRegularization(l1=1e-1)(latents)
    return gsl.SparseAutoencoder(
        inputs=inputs,
        outputs={"reconstruction": decoder(latents), "latents": latents},
        loss_terms={"reconstruction": gsl.ReconstructionLoss()},
        metric_terms={"latents": [gsl.L0(), gsl.DeadFeatures(LATENT_DIM)],
                      "reconstruction": [
                          gsl.FractionOfVarianceUnexplained(INPUT_DIM)]})

def train(architecture, strategy, jit_compile=False):
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = build(architecture)
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      jit_compile=jit_compile)
    batch_logs = BatchLogs()
    history = model.fit(X, batch_size=BATCH, epochs=EPOCHS, shuffle=False,
                        verbose=0, callbacks=[batch_logs])
    result = summary(model, history)
    result["batch_logs"] = batch_logs.logs
    result["evaluate"] = model.evaluate(X, batch_size=BATCH, verbose=0,
                                        return_dict=True)
    result["regularization_terms"] = len(model.losses)
    return result

# One MirroredStrategy per process: collectives of a second one clashed.
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
results = {"replicas": mirrored.num_replicas_in_sync, "train": {}}
for architecture in ("gated", "regularized", "topk"):
    results["train"][architecture] = {
        "single": train(architecture, tf.distribute.get_strategy()),
        "mirrored": train(architecture, mirrored),
    }
def stops_at_a_non_finite_step(strategy):
    # A row that overflows the loss on the second replica of batch 2: fit
    # raises and keeps the weights of a run on batch 1 alone.
    bad = X.copy()
    bad[2 * BATCH - 1, 0] = 3e38
    weights = []
    for data in (X[:BATCH], bad):
        keras.utils.set_random_seed(1)
        with strategy.scope():
            model = build("gated")
            model.compile(optimizer=keras.optimizers.Adam(1e-2))
        try:
            model.fit(data, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
            raised = None
        except ValueError as exception:
            raised = str(exception)
        weights.append(model.get_weights())
    difference = max(float(np.abs(a - b).max()) for a, b in zip(*weights))
    return {"raised": raised, "max_difference": difference}

results["non_finite_step"] = stops_at_a_non_finite_step(mirrored)
try:
    train("gated", mirrored, jit_compile=True)
    results["jit_error"] = None
except ValueError as exception:
    results["jit_error"] = str(exception)
emit(results)
"""


def _run(script, env):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines()
             if line.startswith("RESULTS_JSON=")]
    assert result.returncode == 0 and lines, (
        result.stdout[-3000:] + result.stderr[-5000:])
    return json.loads(lines[-1][len("RESULTS_JSON="):])


@pytest.fixture(scope="module")
def jax_results():
    pytest.importorskip("jax")
    flags = os.environ.get("XLA_FLAGS", "")
    return _run(JAX_SCRIPT, {
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=4".strip()})


@pytest.fixture(scope="module")
def tf_results():
    pytest.importorskip("tensorflow")
    return _run(TF_SCRIPT, {"KERAS_BACKEND": "tensorflow"})


def assert_same_training(reference, other):
    """The same logs, weights and decoder row norms, to float32 round-off."""
    history, expected = other["history"], reference["history"]
    assert sorted(history) == sorted(expected)
    for name in ("loss", "l0", "fvu"):
        assert name in history
    for name, values in expected.items():
        if name == "dead_features":
            assert history[name] == values
        else:
            np.testing.assert_allclose(history[name], values, rtol=1e-5, atol=1e-6,
                                       err_msg=name)
    assert sorted(other["weights"]) == sorted(reference["weights"])
    for path, values in reference["weights"].items():
        np.testing.assert_allclose(other["weights"][path], values, rtol=1e-5,
                                   atol=1e-5, err_msg=path)
    np.testing.assert_allclose(other["row_norms"], reference["row_norms"], atol=1e-6)
    np.testing.assert_allclose(other["row_norms"], 1.0, atol=1e-5)


# ------------------------------------------------------------------- JAX
JAX_RUNS = [("gated", "data_parallel"), ("gated", "latent_1x4"),
            ("gated", "latent_2x2"), ("topk", "latent_2x2")]


@pytest.mark.parametrize("architecture,run", JAX_RUNS)
def test_jax_distributed_fit_matches_one_device(jax_results, architecture, run):
    runs = jax_results["train"][architecture]
    assert_same_training(runs["single"], runs[run])


def test_jax_training_moved_the_weights(jax_results):
    # Guards the comparison above against a run that did nothing.
    for runs in jax_results["train"].values():
        history = runs["single"]["history"]
        assert history["loss"][-1] < 0.8 * history["loss"][0]


@pytest.mark.parametrize("architecture,run,latent_devices", [
    ("gated", "latent_1x4", 4), ("gated", "latent_2x2", 2), ("topk", "latent_2x2", 2)])
def test_latent_parallel_shards_the_latent_axis(jax_results, architecture, run,
                                                latent_devices):
    result = jax_results["train"][architecture][run]
    layouts = result["layouts"]
    shard = LATENT_DIM // latent_devices
    assert layouts["decoder/kernel"] == {"spec": ["model", None],
                                         "shard": [shard, INPUT_DIM]}
    assert layouts["decoder/bias"] == {"spec": [None], "shard": [INPUT_DIM]}
    kernel = "encoder/gate_kernel" if architecture == "gated" else "encoder/kernel"
    assert layouts[kernel] == {"spec": [None, "model"], "shard": [INPUT_DIM, shard]}
    vectors = (["encoder/gate_bias", "encoder/magnitude_log_scale",
                "encoder/magnitude_bias"] if architecture == "gated"
               else ["encoder/bias", "encoder/steps_since_fired"])
    for path in vectors:
        assert layouts[path] == {"spec": ["model"], "shard": [shard]}, path
    # The DeadFeatures accumulator is laid out like the latents too.
    assert result["metric_layouts"]["dead_features/fire_counts"] == {
        "spec": ["model"], "shard": [shard]}
    # Adam's moments follow their variables.
    optimizer = result["optimizer_layouts"]
    decoder_slots = [path for path in optimizer if "decoder_kernel" in path]
    assert len(decoder_slots) == 2
    for path in decoder_slots:
        assert optimizer[path]["spec"] == ["model", None], path


def test_data_parallel_replicates_every_variable(jax_results):
    result = jax_results["train"]["gated"]["data_parallel"]
    for path, layout in {**result["layouts"], **result["metric_layouts"]}.items():
        assert set(layout["spec"]) <= {None}, path


@pytest.mark.parametrize("architecture", sorted(VARIANTS))
def test_every_variant_is_sharded_exactly_on_its_latent_axes(jax_results, architecture):
    layouts = jax_results["layouts"][architecture]
    sharded = {path for path, layout in layouts.items() if "model" in layout["spec"]}
    assert "decoder/kernel" in sharded and "dead_features/fire_counts" in sharded
    for path, layout in layouts.items():
        if "model" in layout["spec"]:
            axis = layout["spec"].index("model")
            assert layout["shard"][axis] == LATENT_DIM // 4, path


def test_latent_parallel_errors(jax_results):
    errors = jax_results["errors"]
    assert errors["three_latent_devices"] == (
        "ValueError: `batch_devices * latent_devices` must equal the number of "
        "devices (4); to use fewer, pass `devices=keras.distribution.list_devices()"
        "[:n]`. Received: batch_devices=1, latent_devices=3")
    assert errors["batch_devices_not_dividing"] == (
        "ValueError: `batch_devices` must divide the number of devices (4). "
        "Received: batch_devices=3")
    assert errors["zero_batch_devices"] == (
        "ValueError: `batch_devices` must be a positive integer. "
        "Received: batch_devices=0")
    assert errors["float_latent_devices"] == (
        "TypeError: `latent_devices` must be a positive integer. "
        "Received: latent_devices=2.0 of type float")


# ------------------------------------------------------------ TensorFlow
@pytest.mark.parametrize("architecture", ["gated", "regularized", "topk"])
def test_mirrored_fit_matches_one_device(tf_results, architecture):
    assert tf_results["replicas"] == 2
    runs = tf_results["train"][architecture]
    assert_same_training(runs["single"], runs["mirrored"])


@pytest.mark.parametrize("architecture", ["gated", "regularized"])
def test_mirrored_batch_logs_and_evaluate_match_one_device(tf_results, architecture):
    runs = tf_results["train"][architecture]
    single, mirrored = runs["single"], runs["mirrored"]
    assert len(mirrored["batch_logs"]) == len(single["batch_logs"]) == 4 * 2
    for step, (expected, logs) in enumerate(
            zip(single["batch_logs"], mirrored["batch_logs"])):
        assert sorted(logs) == sorted(expected)
        for name, value in expected.items():
            np.testing.assert_allclose(logs[name], value, rtol=1e-5, atol=1e-6,
                                       err_msg=f"step {step}: {name}")
    for name, value in single["evaluate"].items():
        np.testing.assert_allclose(mirrored["evaluate"][name], value, rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_mirrored_regularization_loss_is_counted_once(tf_results):
    runs = tf_results["train"]["regularized"]
    assert runs["single"]["regularization_terms"] == 1
    single, mirrored = runs["single"]["history"], runs["mirrored"]["history"]
    # The total is more than the reconstruction term: the regularizer counts.
    assert single["loss"][0] - single["reconstruction"][0] > 1.0
    np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=1e-5)


def test_mirrored_step_with_an_overflow_on_one_replica_changes_nothing(tf_results):
    result = tf_results["non_finite_step"]
    assert result["raised"] is not None and "NaN or Inf" in result["raised"]
    assert result["max_difference"] < 1e-6


def test_mirrored_jit_compile_on_cpu_raises_a_clear_error(tf_results):
    message = tf_results["jit_error"]
    assert message is not None
    assert message.startswith(
        "`jit_compile=True` does not work with MirroredStrategy over CPU devices")
    assert "jit_compile=False" in message and "Received: jit_compile=True" in message


# ---------------------------------------------- the layout map, in process
def _mesh():
    return keras.distribution.DeviceMesh(
        shape=(1, 1), axis_names=("batch", "model"),
        devices=keras.distribution.list_devices()[:1])


@pytest.mark.parametrize("architecture", sorted(VARIANTS))
def test_layout_map_shards_exactly_the_latent_axes(architecture):
    layout_map = distribution.latent_layout_map(_mesh())
    model = gsl.build_sae(architecture, INPUT_DIM, LATENT_DIM, **VARIANTS[architecture])
    variables = model.weights + model.metrics_variables
    assert any(v.path.endswith("fire_counts") for v in variables)
    for variable in variables:
        layout = layout_map[variable.path]
        axes = (None,) * len(variable.shape) if layout is None else layout.axes
        expected = tuple("model" if size == LATENT_DIM else None
                         for size in variable.shape)
        assert axes == expected, (variable.path, tuple(variable.shape))


def test_layout_map_matches_nested_paths_and_other_names():
    layout_map = distribution.latent_layout_map(
        _mesh(), latent_axis="batch", encoder_name="enc.1", decoder_name="dec")
    assert layout_map["outer/enc.1/kernel"].axes == (None, "batch")
    assert layout_map["dec/kernel"].axes == ("batch", None)
    assert layout_map["my_dead/fire_counts"].axes == ("batch",)
    # Names are literal, not regexes, and the decoder bias stays replicated.
    assert layout_map["encx1/kernel"] is None
    assert layout_map["dec/bias"] is None
    assert layout_map["decoder/kernel"] is None


def test_layout_map_errors():
    with pytest.raises(TypeError, match=(
            r"`device_mesh` must be a `keras.distribution.DeviceMesh`. "
            r"Received: device_mesh=\(1, 4\) of type tuple")):
        distribution.latent_layout_map((1, 4))
    with pytest.raises(ValueError, match=(
            r"`latent_axis` must name an axis of `device_mesh` "
            r"\['batch', 'model'\]. Received: latent_axis='latent'")):
        distribution.latent_layout_map(_mesh(), latent_axis="latent")
    with pytest.raises(TypeError, match="`encoder_name` must be a non-empty string"):
        distribution.latent_layout_map(_mesh(), encoder_name="")
    with pytest.raises(ValueError, match="`encoder_name` and `decoder_name` must differ"):
        distribution.latent_layout_map(_mesh(), encoder_name="x", decoder_name="x")


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="checks other backends")
def test_latent_parallel_needs_jax():
    with pytest.raises(RuntimeError, match="`latent_parallel` needs the JAX backend"):
        distribution.latent_parallel()


def test_replica_helpers_are_identity_on_one_device():
    assert distribution.num_replicas_in_sync() == 1
    value = np.arange(3.0)
    assert distribution.sum_over_replicas(value) is value
    assert distribution.read_across_replicas(lambda: "read") == "read"
    distribution.check_jit_compile(True)   # one device: nothing to refuse
