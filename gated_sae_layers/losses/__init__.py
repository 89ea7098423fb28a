"""Loss terms of sparse autoencoders, as pure functions and thin `Loss` classes.

One module per kind of term, each term summed over features per example and
averaged over the batch:

| module | pure functions | classes |
|---|---|---|
| `base` | `at_least_float32` | `CoefficientLoss`, the base of every term with a coefficient |
| `reconstruction` | `squared_error` | `ReconstructionLoss`: `||x - x_hat||^2` |
| `sparsity` | `l1_of_relu`, `l1_norm`, `active_count` | `SparsityLoss` (the base), `SparsityPenalty` (gated), `L1Penalty` (ReLU), `L0Penalty` (JumpReLU) |
| `auxiliary` | `squared_norm` | `AuxReconstruction` (gated), `AuxKLoss` (TopK), `AuxKTargetLoss` (TopK transcoders) |

The total gated SAE loss (Rajamanoharan et al. 2024, arXiv:2404.16014, eq. 8):

```
L = ||x - x_hat(f(x))||^2                                 # ReconstructionLoss
    + lambda * ||relu(pi_gate(x))||_1                     # SparsityPenalty
    + alpha  * ||x - x_hat_frozen(relu(pi_gate(x)))||^2   # AuxReconstruction
```

The other SAEs swap the sparsity term (`L1Penalty`, `L0Penalty`) or the
auxiliary term (`AuxKLoss`); the sparsity terms say so with
`is_sparsity_term = True`.
"""

from gated_sae_layers.losses.auxiliary import (
    AuxKLoss,
    AuxKTargetLoss,
    AuxReconstruction,
    squared_norm,
)
from gated_sae_layers.losses.base import PACKAGE, CoefficientLoss, at_least_float32
from gated_sae_layers.losses.reconstruction import ReconstructionLoss, squared_error
from gated_sae_layers.losses.sparsity import (
    L0Penalty,
    L1Penalty,
    SparsityLoss,
    SparsityPenalty,
    active_count,
    l1_norm,
    l1_of_relu,
)

__all__ = [
    "PACKAGE",
    "AuxKLoss",
    "AuxKTargetLoss",
    "AuxReconstruction",
    "CoefficientLoss",
    "L0Penalty",
    "L1Penalty",
    "ReconstructionLoss",
    "SparsityLoss",
    "SparsityPenalty",
    "active_count",
    "at_least_float32",
    "l1_norm",
    "l1_of_relu",
    "squared_error",
    "squared_norm",
]
