"""`build_crosscoder`: one dictionary that reads and reconstructs several layers."""

import numpy as np
from keras import ops

from gated_sae_layers.layers.batch_topk_encoder import BatchTopKEncoder
from gated_sae_layers.layers.decoder_norm_weighting import DecoderNormWeighting, block_norms
from gated_sae_layers.layers.relu_encoder import ReLUEncoder
from gated_sae_layers.layers.topk_encoder import TopKEncoder
from gated_sae_layers.losses import L1Penalty, ReconstructionLoss
from gated_sae_layers.metrics import LayerFractionOfVarianceUnexplained
from gated_sae_layers.models.builders import assembly
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder

CROSSCODER_ARCHITECTURES = ("relu", "topk", "batch_topk")
RELU_DECODER_INIT_NORM = 0.1
"""The ReLU crosscoder's decoder rows start at this norm (and `W_enc = W_dec^T`):
with unit rows, every latent of a large dictionary fires at the start and the
first reconstructions are thousands of times the data's scale."""


def _metrics(input_dim, num_layers, latent_dim):
    metrics = assembly.standard_metrics(input_dim * num_layers, latent_dim)
    metrics["reconstruction"] += [LayerFractionOfVarianceUnexplained(input_dim, layer)
                                  for layer in range(num_layers)]
    return metrics


def build_crosscoder(input_dim, num_layers, latent_dim, architecture="relu",
                     sparsity_coefficient=None, k=None, k_aux=512,
                     dead_steps_threshold=1000, aux_coefficient=1 / 32,
                     name="crosscoder", dtype=None):
    """Builds an acausal crosscoder over `num_layers` layers (Lindsey et al. 2024).

    ```
    a = [a^1 | a^2 | ... | a^n]                     # (batch, n * input_dim)
    f = relu(sum_l (a^l - b_dec^l) W_enc^l + b_enc)  # one set of latents
    a'^l = f W_dec^l + b_dec^l                      # every layer reconstructed
    L = sum_l ||a^l - a'^l||^2 + lambda * sum_j f_j sum_l ||W_dec^l_j||
    ```

    Lindsey, Templeton, Marcus, Conerly, Batson & Olah 2024, "Sparse
    crosscoders for cross-layer features and model diffing" (Transformer
    Circuits Thread): the layers (of one model, or the same layer of two
    models for model diffing) are read side by side, so the per-layer
    encoders `W_enc^l` are the row blocks of one `W_enc` and the per-layer
    decoders `W_dec^l` the column blocks of one `W_dec`. `"relu"` is the
    paper's crosscoder: decoder rows left free (starting at norm 0.1, with
    `W_enc = W_dec^T`) and the L1 penalty weighted by the sum of each
    latent's per-layer decoder norms
    (`DecoderNormWeighting(blocks=num_layers)`). `"topk"` and `"batch_topk"`
    keep `k` latents per row (unit-norm decoder rows, AuxK) instead of the
    penalty. As in the kit's SAEs, the encoder reads `a - b_dec` (the
    paper's `b_enc` absorbs it: the same function class). Train with
    `fit(a)`: the target is the input. `crosscoder_decoder_norms(model)`
    gives `||W_dec^l_j||` per layer, the paper's view of which layers a
    latent writes to.

    Args:
        input_dim: int, the width of one layer.
        num_layers: int >= 1, the number of layers read side by side.
        latent_dim: int, the number of latents.
        architecture: `"relu"` (the paper), `"topk"` or `"batch_topk"`.
        sparsity_coefficient: float >= 0, lambda (`"relu"` only).
        k, k_aux, dead_steps_threshold, aux_coefficient: as `build_topk_sae`
            (`"topk"` and `"batch_topk"` only).
        name: the model name.
        dtype: `None` or the dtype policy of the model's layers.

    Returns:
        A `SparseAutoencoder` of input width `num_layers * input_dim` with
        outputs `reconstruction` and `latents` (and the architecture's
        others), metrics `l0`, `fvu` (all layers), `fvu_layer_<l>` per layer
        and `dead_features`; its `architecture` record is
        `{"name": "crosscoder", "arguments": {...}}`.

    Example:

    >>> import numpy as np
    >>> model = build_crosscoder(4, 2, 16, sparsity_coefficient=1e-3)
    >>> model.input_dim
    8
    >>> crosscoder_decoder_norms(model).shape
    (2, 16)
    """
    input_dim, latent_dim = assembly.check_dims(input_dim, latent_dim)
    num_layers = assembly.check_positive_int(num_layers, "num_layers")
    if architecture not in CROSSCODER_ARCHITECTURES:
        raise ValueError(f"`architecture` must be one of {list(CROSSCODER_ARCHITECTURES)}. "
                         f"Received: architecture={architecture!r}")
    width = input_dim * num_layers
    metrics = _metrics(input_dim, num_layers, latent_dim)
    if architecture == "relu":
        if sparsity_coefficient is None or k is not None:
            raise ValueError(
                "A ReLU crosscoder takes `sparsity_coefficient` (lambda) and no `k`. "
                f"Received: sparsity_coefficient={sparsity_coefficient!r}, k={k!r}")
        sparsity_coefficient = assembly.check_coefficient(
            sparsity_coefficient, "sparsity_coefficient")
        ends = assembly.DictionaryEnds(width, latent_dim, kernel_constraint=None,
                                       dtype=dtype)
        encoder = ReLUEncoder(latent_dim, name="encoder", dtype=dtype)
        latents = encoder(ends.encoder_input)["latents"]
        weighted = DecoderNormWeighting(ends.decoder, blocks=num_layers,
                                        name="decoder_norm_weighting", dtype=dtype)(latents)
        model = SparseAutoencoder(
            inputs=ends.activations,
            outputs={"reconstruction": ends.reconstruct(latents), "latents": latents,
                     "weighted_latents": weighted},
            loss_terms={"reconstruction": ReconstructionLoss(),
                        "weighted_latents": L1Penalty(sparsity_coefficient)},
            metric_terms=metrics, name=name)
        # Rows start at norm 0.1 (free rows; Conerly et al. 2024), W_enc = W_dec^T.
        ends.decoder.kernel.assign(ends.decoder.kernel * RELU_DECODER_INIT_NORM)
        ends.initialize_encoder(encoder)
        arguments = {"sparsity_coefficient": sparsity_coefficient}
    else:
        if k is None or sparsity_coefficient is not None:
            raise ValueError(
                f"A {architecture} crosscoder takes `k` and no `sparsity_coefficient`. "
                f"Received: k={k!r}, sparsity_coefficient={sparsity_coefficient!r}")
        k = assembly.check_k(k, latent_dim)
        aux_coefficient = assembly.check_auxk_arguments(
            k_aux, dead_steps_threshold, aux_coefficient)
        encoder_class = TopKEncoder if architecture == "topk" else BatchTopKEncoder
        encoder = encoder_class(latent_dim, k, k_aux, dead_steps_threshold,
                                name="encoder", dtype=dtype)
        model = assembly.assemble_k_sparse_sae(encoder, width, latent_dim, aux_coefficient,
                                               name, dtype=dtype, metric_terms=metrics)
        arguments = {"k": k, "k_aux": k_aux, "dead_steps_threshold": dead_steps_threshold,
                     "aux_coefficient": aux_coefficient}
    return assembly.record_architecture(
        model, "crosscoder", architecture=architecture, num_layers=num_layers,
        **arguments)


def crosscoder_decoder_norms(model):
    """`||W_dec^l_j||` for each layer `l` and latent `j`: a `(num_layers, latent_dim)` array.

    A latent whose norm is large in one layer and near zero in the others
    is specific to that layer (in model diffing: to one model).

    Args:
        model: a model of `build_crosscoder` (its record names the layers).
    """
    record = getattr(model, "architecture", None) or {}
    if record.get("name") != "crosscoder":
        raise ValueError(
            "`crosscoder_decoder_norms` needs a model of `build_crosscoder` (its "
            f"`architecture` record is named 'crosscoder'). Received: a model "
            f"whose record is {record.get('name')!r}")
    num_layers = record["arguments"]["num_layers"]
    return np.asarray(ops.convert_to_numpy(block_norms(model.decoder.kernel, num_layers)))
