"""Import first: quiets TensorFlow's C++ logs (`TF_CPP_MIN_LOG_LEVEL=3`) unless set.

TensorFlow reads the variable when it is first imported, so an entry module
that imports keras at its top imports this before it::

    from benchmarks import quiet_logs  # noqa: F401 - first: before keras

The Keras backend is left as it is (`KERAS_BACKEND`, else Keras's default).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
