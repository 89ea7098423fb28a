"""Runs the layer, loss, metric and gradient tests again on the JAX backend."""

import os
import subprocess
import sys

import pytest

JAX_TESTS = ["tests/test_layers.py", "tests/test_losses.py", "tests/test_metrics.py",
             "tests/test_gradients.py", "tests/test_resampling.py",
             "tests/test_variants.py", "tests/test_variant_layers.py"]


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax", reason="already on JAX")
def test_layer_loss_and_metric_tests_pass_on_jax():
    pytest.importorskip("jax")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *JAX_TESTS],
        cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
