"""Import first: makes TensorFlow the Keras backend unless `KERAS_BACKEND` says otherwise.

Keras fixes its backend when it is first imported (and would otherwise read
`~/.keras/keras.json`), so an entry module that needs TensorFlow by default
imports this before anything that may import keras::

    from benchmarks import tensorflow_backend  # noqa: F401 - first: TensorFlow by default

Also quiets TensorFlow's C++ logs (`TF_CPP_MIN_LOG_LEVEL=3`) unless set.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
