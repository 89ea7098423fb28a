"""The pieces every SAE builder shares: argument checks, input, decoder, metrics.

A builder is a few lines of these plus its encoder and loss terms. This
module is public, so a builder copied into your own file keeps working:

```python
from gated_sae_layers.models.builders import assembly

input_dim, latent_dim = assembly.check_dims(input_dim, latent_dim)
activations, decoder, centered = assembly.sae_input_and_decoder(input_dim, latent_dim)
```
"""

import numbers

import keras
from keras import ops

from gated_sae_layers import _validation
from gated_sae_layers.layers.auxk_residual import AuxKResidual
from gated_sae_layers.layers.prefix_mask import PrefixMask
from gated_sae_layers.layers.unit_norm_decoder import UnitNormDecoder
from gated_sae_layers.losses import AuxKLoss, ReconstructionLoss
from gated_sae_layers.metrics import L0, DeadFeatures, FractionOfVarianceUnexplained
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder


def check_dims(input_dim, latent_dim):
    """Checks the two widths of an SAE.

    Returns:
        `(input_dim, latent_dim)` as Python ints; raises `TypeError` or
        `ValueError` unless both are positive integers.
    """
    return (_validation.check_positive_int(input_dim, "input_dim"),
            _validation.check_positive_int(latent_dim, "latent_dim"))


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


def sae_input_and_decoder(input_dim, latent_dim, kernel_constraint="unit_norm_rows",
                          remove_parallel_gradient=False, dtype=None):
    """The model input, the decoder and the centered input every SAE starts from.

    Args:
        input_dim: int, the width of the activations.
        latent_dim: int, the number of latents.
        kernel_constraint: the decoder's row constraint (`None` leaves the
            rows free); see `UnitNormDecoder`.
        remove_parallel_gradient: bool, see `UnitNormDecoder`.
        dtype: `None` or the dtype policy of the decoder.

    Returns:
        `(activations, decoder, centered)`: the `keras.Input` named
        `"activations"` of shape `(batch, input_dim)`, the
        `UnitNormDecoder` named `"decoder"` (`W_dec` of shape
        `(latent_dim, input_dim)`, `b_dec` of shape `(input_dim,)`), and
        `x - b_dec` of shape `(batch, input_dim)`, the encoder's input.
    """
    activations = keras.Input(shape=(input_dim,), name="activations")
    decoder = UnitNormDecoder(latent_dim, input_dim, kernel_constraint=kernel_constraint,
                              remove_parallel_gradient=remove_parallel_gradient,
                              name="decoder", dtype=dtype)
    return activations, decoder, decoder(activations, mode="center")


def auxk_residual(activations, decoder, reconstruction, aux_latents, dtype=None):
    """The residual `e - e_hat` that the AuxK loss penalizes (Gao et al. 2024).

    `e = x - x_hat` and `e_hat = z_aux @ W_dec` (no `b_dec`), from the top
    `k_aux` dead latents `z_aux`.

    Args:
        activations: the model input `x`, `(batch, input_dim)`.
        decoder: the model's `UnitNormDecoder`.
        reconstruction: `x_hat`, `(batch, input_dim)`.
        aux_latents: `z_aux`, `(batch, latent_dim)`.
        dtype: `None` or the dtype policy of the `AuxKResidual` layer.

    Returns:
        The output of the `AuxKResidual` layer named `"auxk_residual"`, of
        shape `(batch, input_dim)`.
    """
    aux_prediction = decoder(aux_latents, use_bias=False)
    return AuxKResidual(name="auxk_residual", dtype=dtype)(
        [activations, reconstruction, aux_prediction, aux_latents])


def standard_metrics(input_dim, latent_dim):
    """The `metric_terms` every SAE logs: `l0`, `dead_features` and `fvu`.

    Returns:
        A dict `{"latents": [L0, DeadFeatures], "reconstruction": [FVU]}`
        for `SparseAutoencoder(metric_terms=...)`.
    """
    return {"latents": [L0(), DeadFeatures(latent_dim)],
            "reconstruction": [FractionOfVarianceUnexplained(input_dim)]}


def tie_encoder_to_decoder(encoder, decoder, scale=1.0):
    """Tied initialization `W_enc = scale * W_dec^T` (Gao et al. 2024; Conerly et al. 2024).

    Assigns the transposed decoder kernel, `(input_dim, latent_dim)`, times
    `scale` to `encoder.input_kernel`; call it once the model is built.
    """
    encoder.input_kernel.assign(ops.transpose(decoder.kernel) * scale)


def check_init_scale(value, name="encoder_init_scale"):
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
                          prefix_sizes=(), dtype=None):
    """Assembles a k-budget SAE (TopK, BatchTopK, Matryoshka) around `encoder`.

    Args:
        encoder: an `AuxKEncoder` (such as `TopKEncoder`) named `"encoder"`
            whose outputs include `latents` and `aux_latents`.
        input_dim: int, the width of the activations.
        latent_dim: int, the number of latents.
        aux_coefficient: float >= 0, alpha of `AuxKLoss`.
        name: the model name.
        prefix_sizes: ints `m < latent_dim`; each adds an output
            `reconstruction_<m>` (`(batch, input_dim)`, decoded from the first
            `m` latents), its `ReconstructionLoss` and metric `fvu_<m>`.
        dtype: `None` or the dtype policy of the model's layers.

    Returns:
        A `SparseAutoencoder` with outputs `reconstruction` and
        `aux_residual` (`(batch, input_dim)`), `latents` and `aux_latents`
        (`(batch, latent_dim)`), loss terms `reconstruction` and `aux`, and
        metrics `l0`, `fvu`, `dead_features`; `W_enc` starts as `W_dec^T`.
    """
    activations, decoder, centered = sae_input_and_decoder(input_dim, latent_dim,
                                                           dtype=dtype)
    encoded = encoder(centered)
    latents = encoded["latents"]
    reconstruction = decoder(latents)
    outputs = {"reconstruction": reconstruction, "latents": latents,
               "aux_latents": encoded["aux_latents"],
               "aux_residual": auxk_residual(
                   activations, decoder, reconstruction, encoded["aux_latents"], dtype)}
    loss_terms = {"reconstruction": ReconstructionLoss(),
                  "aux_residual": AuxKLoss(aux_coefficient)}
    metric_terms = standard_metrics(input_dim, latent_dim)
    for size in prefix_sizes:
        output = f"reconstruction_{size}"
        outputs[output] = decoder(
            PrefixMask(size, name=f"prefix_{size}", dtype=dtype)(latents))
        loss_terms[output] = ReconstructionLoss(name=output)
        metric_terms[output] = [FractionOfVarianceUnexplained(input_dim, name=f"fvu_{size}")]
    model = SparseAutoencoder(inputs=activations, outputs=outputs, loss_terms=loss_terms,
                              metric_terms=metric_terms, name=name)
    tie_encoder_to_decoder(encoder, decoder)
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
    raise TypeError(
        f"`record_architecture` saves the builder's arguments with the model, as "
        f"JSON: `{name}` must be None, a bool, a number, a string or a list of them. "
        f"Received: {name}={value!r} of type {type(value).__name__}")


def record_architecture(model, architecture, **arguments):
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
