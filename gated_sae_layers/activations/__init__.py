"""Activations of real models: an on-disk store and its stream into `fit`."""

from gated_sae_layers.activations.store import ActivationStore, StoreCorruptionError
from gated_sae_layers.activations.stream import store_dataset

__all__ = ["ActivationStore", "StoreCorruptionError", "store_dataset"]
