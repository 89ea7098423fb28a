"""`build_gated_sae`. Moved to gated_sae_layers.models.builders; kept so old imports work."""

from gated_sae_layers.models.builders.gated import build_gated_sae

__all__ = ["build_gated_sae"]
