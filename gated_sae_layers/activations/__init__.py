"""Activations of real models: harvest, an on-disk store, its stream into `fit`,
normalization, and splicing an SAE back in."""

from gated_sae_layers.activations.harvest import harvest
from gated_sae_layers.activations.minilm import load_minilm, minilm_path, stdlib_docstrings
from gated_sae_layers.activations.normalization import (
    estimate_center, estimate_norm_scale, geometric_median)
from gated_sae_layers.activations.splice import SplicedModel, loss_recovered, spliced
from gated_sae_layers.activations.store import (
    ActivationStore, StoreCorruptionError, StoreLockedError)
from gated_sae_layers.activations.stream import paired_dataset, store_dataset


__all__ = [
    "ActivationStore", "SplicedModel", "StoreCorruptionError", "StoreLockedError",
    "estimate_center", "estimate_norm_scale", "geometric_median", "harvest", "load_minilm",
    "loss_recovered", "minilm_path", "paired_dataset", "spliced", "stdlib_docstrings",
    "store_dataset",
]
