"""The pieces every SAE builder shares: argument checks, input, decoder, metrics.

A builder is a few lines of these plus its encoder and loss terms. This
module is public, so a builder copied into your own file keeps working:

```python
from gated_sae_layers.models.builders import assembly

input_dim, latent_dim = assembly.check_dims(input_dim, latent_dim)
activations, decoder, centered = assembly.sae_input_and_decoder(input_dim, latent_dim)
```

A transcoder (`output_dim=`) or skip transcoder (`skip=True`) is the same
assembly with `DictionaryEnds`: the encoder reads `x` itself, the decoder
writes `output_dim` columns, and `ends.reconstruct(latents)` adds the skip.
"""

import numbers

from gated_sae_layers import _validation
from gated_sae_layers.layers.prefix_mask import PrefixMask
from gated_sae_layers.losses import ReconstructionLoss
from gated_sae_layers.metrics import L0, DeadFeatures, FractionOfVarianceUnexplained
from gated_sae_layers.models.builders.ends import (  # noqa: F401 - re-exported
    DictionaryEnds,
    auxk_residual,
    sae_input_and_decoder,
    tie_encoder_to_decoder,
    transcoder_arguments,
)
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder

TRANSCODER_ENCODER_SCALE = 3 ** -0.5
"""The column norm of a k-sparse transcoder's starting `W_enc` (random
directions): that of PyTorch's `nn.Linear` start, which sparsify's transcoders
use (uniform entries of variance `1 / (3 input_dim)`). With `b_dec` left at 0
and Adam's epsilon at 1e-8 it closed the 1.5% held-out FVU gap to sparsify on a
MiniLM MLP block (0.1075 against sparsify's 0.1074; 0.1090 with unit columns
and `b_dec` at the targets' mean: `benchmarks/quality/RESULTS.md`)."""


def check_dims(input_dim, latent_dim):
    """Checks the two widths of an SAE.

    Returns:
        `(input_dim, latent_dim)` as Python ints; raises `TypeError` or
        `ValueError` unless both are positive integers.
    """
    return (_validation.check_positive_int(input_dim, "input_dim"),
            _validation.check_positive_int(latent_dim, "latent_dim"))


def check_positive_int(value, name):
    """Returns `value` as an int, or raises unless it is an integer >= 1."""
    return _validation.check_positive_int(value, name)


def check_coefficient(value, name):
    """Returns `value` as a float, or raises unless it is finite and >= 0.

    Args:
        value: the coefficient (a loss weight such as lambda or alpha).
        name: the argument's name, quoted in the error message.
    """
    return _validation.check_non_negative_float(value, name)


def check_k(k, latent_dim, name="k"):
    """Returns `k` as an int, or raises unless `1 <= k <= latent_dim`."""
    return _validation.check_k(k, latent_dim, name)


def check_auxk_arguments(k_aux, dead_steps_threshold, aux_coefficient):
    """Checks the AuxK arguments of the k-budget builders.

    Returns:
        `aux_coefficient` as a float; raises unless `k_aux` and
        `dead_steps_threshold` are positive integers and `aux_coefficient`
        is finite and >= 0.
    """
    _validation.check_positive_int(k_aux, "k_aux")
    _validation.check_positive_int(dead_steps_threshold, "dead_steps_threshold")
    return check_coefficient(aux_coefficient, "aux_coefficient")


def standard_metrics(input_dim, latent_dim):
    """The `metric_terms` every SAE logs: `l0`, `dead_features` and `fvu`.

    Returns:
        A dict `{"latents": [L0, DeadFeatures], "reconstruction": [FVU]}`
        for `SparseAutoencoder(metric_terms=...)`.
    """
    return {"latents": [L0(), DeadFeatures(latent_dim)],
            "reconstruction": [FractionOfVarianceUnexplained(input_dim)]}


def check_positive(value, name):
    """`value` as a float in (0, inf); a `ValueError`/`TypeError` otherwise."""
    value = check_coefficient(value, name)
    if value == 0.0:
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")
    return value


def check_bool(value, name):
    """`value` if it is a bool; a `TypeError` naming `name` otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return value


def assemble_k_sparse_sae(encoder, input_dim, latent_dim, aux_coefficient, name,
                          prefix_sizes=(), dtype=None, output_dim=None, skip=False,
                          metric_terms=None):
    """Assembles a k-budget SAE (TopK, BatchTopK, Matryoshka) around `encoder`.

    Args:
        encoder: an `AuxKEncoder` (such as `TopKEncoder`) named `"encoder"`
            whose outputs include `latents` and `aux_latents`.
        input_dim: int, the width of the activations.
        latent_dim: int, the number of latents.
        aux_coefficient: float >= 0, alpha of `AuxKLoss`.
        name: the model name.
        prefix_sizes: ints `m < latent_dim`; each adds an output
            `reconstruction_<m>` (`(batch, output_dim)`, decoded from the first
            `m` latents), its `ReconstructionLoss` and metric `fvu_<m>`.
        dtype: `None` or the dtype policy of the model's layers.
        output_dim, skip: `None` and `False` for an SAE; a transcoder's
            target width and linear skip (`DictionaryEnds`).
        metric_terms: `None` (`standard_metrics`) or the model's metrics.

    Returns:
        A `SparseAutoencoder` with outputs `reconstruction` and
        `aux_residual` (`(batch, output_dim)`; `AuxKResidual`, or
        `AuxKPrediction` for a transcoder), `latents` and `aux_latents`
        (`(batch, latent_dim)`), loss terms `reconstruction` and `aux`, and
        metrics `l0`, `fvu`, `dead_features`; `W_enc` starts as `W_dec^T`
        (an SAE) or random columns of norm `TRANSCODER_ENCODER_SCALE` (a
        transcoder, whose `W_dec` starts at zero with free rows).
    """
    # A k-sparse transcoder starts as sparsify's: W_dec = 0 with free rows,
    # W_enc columns of norm 1/sqrt(3) (measured better: see `DictionaryEnds`
    # and `TRANSCODER_ENCODER_SCALE`).
    ends = DictionaryEnds(input_dim, latent_dim, output_dim, skip, dtype=dtype,
                          zero_decoder=output_dim is not None)
    encoded = encoder(ends.encoder_input)
    latents = encoded["latents"]
    reconstruction = ends.reconstruct(latents)
    aux_output, aux_loss = ends.aux_target_output(reconstruction,
                                                  encoded["aux_latents"], dtype)
    outputs = {"reconstruction": reconstruction, "latents": latents,
               "aux_latents": encoded["aux_latents"], "aux_residual": aux_output}
    loss_terms = {"reconstruction": ReconstructionLoss(),
                  "aux_residual": aux_loss(aux_coefficient)}
    if metric_terms is None:
        metric_terms = standard_metrics(ends.output_dim, latent_dim)
    for size in prefix_sizes:
        output = f"reconstruction_{size}"
        outputs[output] = ends.reconstruct(
            PrefixMask(size, name=f"prefix_{size}", dtype=dtype)(latents))
        loss_terms[output] = ReconstructionLoss(name=output)
        metric_terms[output] = [FractionOfVarianceUnexplained(
            ends.output_dim, name=f"fvu_{size}")]
    model = SparseAutoencoder(inputs=ends.activations, outputs=outputs,
                              loss_terms=loss_terms, metric_terms=metric_terms, name=name)
    ends.initialize_encoder(encoder, scale=TRANSCODER_ENCODER_SCALE
                            if output_dim is not None else 1.0)
    return model


def _plain(value, name):
    """`value` as JSON-ready Python (bool, int, float, str, None, lists of them)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item, name) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _plain(item, f"{name}[{key!r}]") for key, item in value.items()}
    raise TypeError(
        f"`record_architecture` saves the builder's arguments with the model, as "
        f"JSON: `{name}` must be None, a bool, a number, a string or a list or "
        f"dict of them. "
        f"Received: {name}={value!r} of type {type(value).__name__}")


def record_architecture(model, architecture, /, **arguments):
    """Records on `model` which builder made it, and with which arguments.

    Sets `model.architecture` to `{"name": architecture, "arguments":
    arguments}`, saved with the model, so a loaded model knows its
    architecture (interop exports it by this record). Pass every argument
    of the builder but `input_dim`, `latent_dim`, `name` and `dtype`, as
    checked (plain numbers and lists); `build_sae(architecture, input_dim,
    latent_dim, **arguments)` then builds the same model.

    Returns:
        `model`.

    Example:

    >>> import gated_sae_layers as gsl
    >>> model = record_architecture(
    ...     assemble_k_sparse_sae(gsl.TopKEncoder(32, 4, name="encoder"), 8, 32,
    ...                           1 / 32, "my_sae"), "my_topk", k=4)
    >>> model.architecture
    {'name': 'my_topk', 'arguments': {'k': 4}}
    """
    model.architecture = {
        "name": architecture,
        "arguments": {key: _plain(value, key) for key, value in arguments.items()}}
    return model
