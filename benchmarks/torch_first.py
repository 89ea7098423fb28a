"""Import before anything loads TensorFlow, in a benchmark that runs PyTorch peers.

A CUDA build of torch (2.14 with its `triton`) loads triton the first time
an optimizer is built (`torch.optim.Adam` imports `torch._dynamo`); when
TensorFlow is already loaded, that import crashes the process with a
segmentation fault (the two native libraries clash). Loading triton first
avoids it::

    from benchmarks import jax_backend  # noqa: F401 - first: JAX by default
    from benchmarks import torch_first  # noqa: F401 - before TensorFlow loads

Does nothing when torch is not installed.
"""

import importlib.util

if importlib.util.find_spec("torch") is not None:
    import torch._dynamo  # noqa: F401
