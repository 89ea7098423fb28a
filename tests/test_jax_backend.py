"""Runs the layer, loss, metric, variant, mixed-precision and fast-`fit` tests
again on the JAX backend, in two subprocesses (so `pytest -n 2` runs them side
by side)."""

import os
import subprocess
import sys

import pytest

JAX_TEST_GROUPS = {
    "layers_losses_metrics": [
        "tests/test_layers.py", "tests/test_losses.py", "tests/test_metrics.py",
        "tests/test_gradients.py", "tests/test_resampling.py",
        "tests/test_variant_layers.py"],
    "training": [
        "tests/test_variants.py", "tests/test_mixed_precision.py",
        "tests/test_device_resident_fit.py"],
}


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax", reason="already on JAX")
@pytest.mark.parametrize("group", sorted(JAX_TEST_GROUPS))
def test_pass_on_jax(group):
    pytest.importorskip("jax")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *JAX_TEST_GROUPS[group]],
        cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
