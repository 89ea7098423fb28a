"""Kept for old imports: the variants' loss terms now live in `gated_sae_layers.losses`.

`L1Penalty` and `L0Penalty` are in `losses/sparsity.py`, `AuxKLoss` in
`losses/auxiliary.py`; import them from `gated_sae_layers` or
`gated_sae_layers.losses`. Saved `.keras` files name them by their
registered names (`gated_sae_layers>L1Penalty`, ...), which did not change.
"""

from gated_sae_layers.losses import (
    PACKAGE,
    AuxKLoss,
    L0Penalty,
    L1Penalty,
    SparsityPenalty,
    active_count,
    at_least_float32,
    l1_norm,
    squared_norm,
)

__all__ = ["PACKAGE", "AuxKLoss", "L0Penalty", "L1Penalty", "SparsityPenalty",
           "active_count", "at_least_float32", "l1_norm", "squared_norm"]
