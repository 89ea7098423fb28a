"""Moved to `gated_sae_layers.layers.top_k_selection`; this path keeps working."""

from gated_sae_layers.layers.top_k_selection import keep_top_k, keep_top_k_over_batch

__all__ = ["keep_top_k", "keep_top_k_over_batch"]
