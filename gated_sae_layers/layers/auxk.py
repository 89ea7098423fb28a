"""Moved to `gated_sae_layers.layers.auxk_encoder` (and `check_k` to
`gated_sae_layers._validation`); this path keeps working."""

from gated_sae_layers._validation import check_k
from gated_sae_layers.layers.auxk_encoder import (
    AuxKEncoder,
    auxk_latents,
    steps_since_fired_update,
)

__all__ = ["AuxKEncoder", "auxk_latents", "check_k", "steps_since_fired_update"]
