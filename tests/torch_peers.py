"""Importing torch, for the opt-in proofs against SAELens and sparsify.

The test process imports Keras first (`conftest.py`), and with it
TensorFlow. A CUDA build of torch then imports Triton, whose native library
crashes the process when it loads after TensorFlow's (a segmentation
fault, seen with torch 2.14 + Triton 3.8 beside TensorFlow 2.21); on a CPU,
where the proofs run, torch and sparsify need no Triton (sparsify then
decodes with its eager `embedding_bag`, as on any machine without Triton).
So Triton is marked absent before torch is imported.
"""

import sys

import pytest


def import_torch():
    """`torch`, with Triton marked absent, or a skip where torch is missing."""
    if "triton" not in sys.modules:
        sys.modules["triton"] = None   # `import triton` raises ImportError
    return pytest.importorskip("torch")
