"""Import first: makes JAX the Keras backend unless `KERAS_BACKEND` says otherwise.

Keras fixes its backend when it is first imported, so an entry module that
defaults to JAX imports this before anything that may import keras::

    from benchmarks import jax_backend  # noqa: F401 - first: JAX by default

Also quiets TensorFlow's C++ logs (`TF_CPP_MIN_LOG_LEVEL=3`) unless set.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
