import gc
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Each xdist worker computes on one thread (TensorFlow's intra-op pool, XLA's
# Eigen pool): two workers on two cores, each with a pool as wide as the
# machine, spent their time contending (a test took 2-4x its time alone).
# Set before TensorFlow or JAX starts; subprocesses of a test inherit it.
# (Only `--` flags: XLA reads no flag after a bare `name=value` token.)
# On the JAX leg the models are tiny and eager JAX compiles every op, so its
# time is mostly XLA compiles, not compiled code: LLVM's cheapest pipeline
# (`--xla_backend_optimization_level=0`) took that leg from 6:46 to 4:54.
# Not on the TensorFlow leg: its MNIST demo trains for real, and ran 140 s
# instead of 62 s with it, which undid the gain there.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [
        os.environ.get("XLA_FLAGS"), "--xla_cpu_multi_thread_eigen=false",
        "--xla_backend_optimization_level=0"
        if os.environ.get("KERAS_BACKEND") == "jax" else ""]))

import hypothesis  # noqa: E402
import keras  # noqa: E402
import pytest  # noqa: E402

hypothesis.settings.register_profile(
    "ci", deadline=None, max_examples=25, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
# The JAX leg (`KERAS_BACKEND=jax python -m pytest -m both_backends tests`)
# reruns the property tests after the TF leg has explored 25 examples each:
# 4 examples there, each one an XLA compile (eager JAX compiles every op for
# each new shape). Chosen by the backend unless HYPOTHESIS_PROFILE names a
# profile; tests that set their own `max_examples` take the smaller one.
hypothesis.settings.register_profile(
    "jax-leg", deadline=None, max_examples=4, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile(os.environ.get(
    "HYPOTHESIS_PROFILE", "jax-leg" if keras.backend.backend() == "jax" else "ci"))

# The tests that run on both backends: the whole suite runs on TensorFlow
# (`python -m pytest`), and these files again on JAX (`KERAS_BACKEND=jax
# python -m pytest -m both_backends tests`): the layers, losses, metrics and
# gradients, then training (variants, mixed precision, the device-resident
# and sparse fits).
BOTH_BACKENDS = {
    "test_encoders.py", "test_decoder.py", "test_helper_layers.py", "test_losses.py",
    "test_metrics.py", "test_gradients.py", "test_resampling.py", "test_guarantees.py",
    "test_keras_compat.py", "test_sparse_kernels.py", "test_sparse_host_kernels.py",
    "test_variants.py", "test_mixed_precision.py", "test_device_resident_fit.py",
    "test_sparse_training.py", "test_target_l0.py", "test_hostile_fit.py",
    "test_transcoders.py", "test_learning_rates.py",
}
# Tests of those files that run on TensorFlow only (a substring of the test's
# name): the six short fits on digits. On JAX each variant's math is checked
# against numpy, and the gated, BatchTopK and JumpReLU fits against the stock
# loop (`test_device_resident_fit.py`).
TF_ONLY = ("short_fit_on_digits",)
_missing = BOTH_BACKENDS - {path.name for path in pathlib.Path(__file__).parent.iterdir()}
assert not _missing, f"tests/conftest.py: BOTH_BACKENDS names missing files {_missing}"


# The modules that take a worker longest (`pytest --durations=0`, the
# larger of the two legs: 324 s down to 32 s). `--dist loadscope
# --no-loadscope-reorder` hands whole modules to the workers in collection
# order: these go first, longest first, so that no worker is left alone with
# a long module at the end (xdist's own order, by number of tests, put the
# 97 s MNIST demo and the 86 s notebooks last).
LONGEST_FIRST = (
    "test_sparse_training.py", "test_sparse_kernels.py", "test_device_resident_fit.py",
    "test_encoders.py", "test_mnist.py", "test_notebooks.py", "test_target_l0.py",
    "test_distribution.py", "test_mixed_precision.py", "test_serialization.py",
    "test_cli.py", "test_variants.py", "test_model.py", "test_guarantees.py",
    "test_readme.py")


def _jax_leg(config):
    return (keras.backend.backend() == "jax"
            and config.getoption("markexpr", "") == "both_backends")


def pytest_ignore_collect(collection_path, config):
    """The JAX leg collects only the files it runs (each worker would import
    and collect every module and doctest, ~15 s, to deselect them)."""
    if not _jax_leg(config):
        return None
    if collection_path.is_dir():
        return collection_path.name in ("gated_sae_layers", "gated_sae_layers_cli") or None
    if collection_path.suffix == ".py" and collection_path.name != "conftest.py":
        return collection_path.name not in BOTH_BACKENDS or None
    return None


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if (item.path.parent.name == "tests" and item.path.name in BOTH_BACKENDS
                and not any(name in item.name for name in TF_ONLY)):
            item.add_marker(pytest.mark.both_backends)

    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)   # stable: each module keeps its own order


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(autouse=True, scope="module")
def _collect_then_freeze_between_modules():
    """Collect a module's garbage when it ends, then freeze what survives
    (`gc.freeze`: later collections no longer walk it). A worker's heap grows
    to 2-3 million objects over the suite (TensorFlow graphs, Keras models
    kept by module caches), and a full collection in the middle of a test
    walked all of it: one took 25-59 s (`gc.callbacks` timings, TF leg)."""
    yield
    gc.collect()
    gc.freeze()
