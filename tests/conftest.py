import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import hypothesis  # noqa: E402
import keras  # noqa: E402
import pytest  # noqa: E402

hypothesis.settings.register_profile(
    "ci", deadline=None, max_examples=25, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
# The JAX leg (`KERAS_BACKEND=jax python -m pytest -m both_backends`) reruns
# the property tests after the TF leg has explored 25 examples each: fewer
# examples there, each one an XLA compile. Chosen by the backend unless
# HYPOTHESIS_PROFILE names a profile.
hypothesis.settings.register_profile(
    "jax-leg", deadline=None, max_examples=8, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile(os.environ.get(
    "HYPOTHESIS_PROFILE", "jax-leg" if keras.backend.backend() == "jax" else "ci"))

# The tests that run on both backends: the whole suite runs on TensorFlow
# (`python -m pytest`), and these files again on JAX (`KERAS_BACKEND=jax
# python -m pytest -m both_backends`): the layers, losses, metrics and
# gradients, then training (variants, mixed precision, the device-resident
# and sparse fits).
BOTH_BACKENDS = {
    "test_encoders.py", "test_decoder.py", "test_helper_layers.py", "test_losses.py",
    "test_metrics.py", "test_gradients.py", "test_resampling.py", "test_guarantees.py",
    "test_keras_compat.py", "test_sparse_kernels.py",
    "test_variants.py", "test_mixed_precision.py", "test_device_resident_fit.py",
    "test_sparse_training.py", "test_target_l0.py", "test_hostile_fit.py",
}
# Tests of those files that run on TensorFlow only (a substring of the test's
# name): the six short fits on digits. On JAX each variant's math is checked
# against numpy, and the gated, BatchTopK and JumpReLU fits against the stock
# loop (`test_device_resident_fit.py`).
TF_ONLY = ("short_fit_on_digits",)
_missing = BOTH_BACKENDS - {path.name for path in pathlib.Path(__file__).parent.iterdir()}
assert not _missing, f"tests/conftest.py: BOTH_BACKENDS names missing files {_missing}"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if (item.path.parent.name == "tests" and item.path.name in BOTH_BACKENDS
                and not any(name in item.name for name in TF_ONLY)):
            item.add_marker(pytest.mark.both_backends)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
