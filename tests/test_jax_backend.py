"""Runs the layer, loss, metric and gradient tests again on the JAX backend.

The training tests (variants, mixed precision, the fast `fit`) rerun on JAX in
`tests/test_jax_training.py`: two modules, so `pytest -n 2 --dist loadscope`
runs the two subprocesses side by side.
"""

import os
import subprocess
import sys

import pytest

JAX_TESTS = ["tests/test_encoders.py", "tests/test_decoder.py", "tests/test_helper_layers.py",
             "tests/test_losses.py", "tests/test_metrics.py",
             "tests/test_gradients.py", "tests/test_resampling.py",
             "tests/test_guarantees.py", "tests/test_keras_compat.py",
             "tests/test_sparse_kernels.py"]


def run_on_jax(test_files, keyword=None):
    """Runs `test_files` (only the tests matching `keyword`, a pytest `-k`
    expression, if given) with pytest under `KERAS_BACKEND=jax`; fails with
    its log."""
    pytest.importorskip("jax")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
           "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "jax-leg")}
    result = subprocess.run(
        # Two workers: when the other JAX leg finishes first, this one still
        # uses both cores (the two legs are the end of the suite's run).
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-n", "2", "--dist", "loadscope", *(["-k", keyword] if keyword else []),
         *test_files],
        cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax", reason="already on JAX")
def test_layer_loss_and_metric_tests_pass_on_jax():
    run_on_jax(JAX_TESTS)
