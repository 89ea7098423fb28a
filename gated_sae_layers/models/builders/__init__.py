"""The SAE variants built from the kit's pieces, and `build_sae`, one entry point for all.

| architecture  | encoder            | loss terms (logged names)                    |
|---------------|--------------------|----------------------------------------------|
| `gated`       | `GatedEncoder`     | reconstruction, sparsity, aux                |
| `relu`        | `ReLUEncoder`      | reconstruction, sparsity (L1)                |
| `topk`        | `TopKEncoder`      | reconstruction, aux (AuxK)                   |
| `batch_topk`  | `BatchTopKEncoder` | reconstruction, aux (AuxK)                   |
| `jumprelu`    | `JumpReLUEncoder`  | reconstruction, sparsity (L0)                |
| `matryoshka`  | `BatchTopKEncoder` | reconstruction, reconstruction_<m>, aux      |

Every model shares `UnitNormDecoder`, `ReconstructionLoss` and the metrics
`l0`, `fvu`, `dead_features`, and has outputs `reconstruction` and `latents`.
Every builder also makes a transcoder (`output_dim=`, `skip=`;
`build_transcoder`), and `build_crosscoder` reads several layers at once
(`docs/transcoders.md`).

One module per builder (`gated`, `relu`, `jumprelu`, `topk`, `matryoshka`),
the pieces they share in `assembly`, and the `Architecture` record of each
variant (`ARCHITECTURES`), `BUILDERS` and `build_sae` in `registry`.
Copy one of these modules to make a variant: each imports only public modules.
"""

from gated_sae_layers.models.builders.crosscoder import (
    build_crosscoder,
    crosscoder_decoder_norms,
)
from gated_sae_layers.models.builders.gated import build_gated_sae
from gated_sae_layers.models.builders.jumprelu import build_jumprelu_sae
from gated_sae_layers.models.builders.matryoshka import build_matryoshka_sae
from gated_sae_layers.models.builders.registry import (
    ARCHITECTURES,
    BUILDERS,
    Architecture,
    build_sae,
    get_architecture,
    register_architecture,
)
from gated_sae_layers.models.builders.relu import build_relu_sae
from gated_sae_layers.models.builders.topk import build_batch_topk_sae, build_topk_sae
from gated_sae_layers.models.builders.transcoder import build_transcoder

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "BUILDERS",
    "build_batch_topk_sae",
    "build_crosscoder",
    "build_gated_sae",
    "build_jumprelu_sae",
    "build_matryoshka_sae",
    "build_relu_sae",
    "build_sae",
    "build_topk_sae",
    "build_transcoder",
    "crosscoder_decoder_norms",
    "get_architecture",
    "register_architecture",
]
