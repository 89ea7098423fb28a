"""Runs the training tests (variants, mixed precision, the fast `fit`) on JAX.

A module of its own so that `pytest -n 2 --dist loadscope` runs it beside
`tests/test_jax_backend.py`.
"""

import os

import pytest

from tests.test_jax_backend import run_on_jax

JAX_TRAINING_TESTS = ["tests/test_variants.py", "tests/test_mixed_precision.py",
                      "tests/test_device_resident_fit.py", "tests/test_sparse_training.py",
                      "tests/test_target_l0.py", "tests/test_hostile_fit.py"]


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax", reason="already on JAX")
def test_training_tests_pass_on_jax():
    # The six short fits on digits run on TF only: on JAX, each variant's math
    # is checked against numpy and the gated, BatchTopK and JumpReLU fits
    # against the stock loop (`test_device_resident_fit.py`).
    run_on_jax(JAX_TRAINING_TESTS, keyword="not short_fit_on_digits")
