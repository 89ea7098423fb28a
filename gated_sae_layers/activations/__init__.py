"""Activations of real models: harvest, an on-disk store, its stream into `fit`,
normalization, and splicing an SAE back in."""

from gated_sae_layers.activations.harvest import harvest
from gated_sae_layers.activations.minilm import load_minilm, minilm_path, stdlib_docstrings
from gated_sae_layers.activations.normalization import (
    estimate_center, estimate_norm_scale, geometric_median)
from gated_sae_layers.activations.splice import SplicedModel, loss_recovered, spliced
from gated_sae_layers.activations.store import (
    ActivationStore, StoreCorruptionError, StoreLockedError)
from gated_sae_layers.activations.stream import store_dataset


def __getattr__(name):
    # `fold_normalization` moved to `gated_sae_layers.models.folding` (it
    # transforms a model); the old name still works, imported lazily.
    if name == "fold_normalization":
        from gated_sae_layers.models.folding import fold_normalization

        return fold_normalization
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ActivationStore", "SplicedModel", "StoreCorruptionError", "StoreLockedError",
    "estimate_center", "estimate_norm_scale", "geometric_median", "harvest", "load_minilm",
    "loss_recovered", "minilm_path", "spliced", "stdlib_docstrings", "store_dataset",
]
