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

import keras
from keras import ops

from gated_sae_layers import _validation
from gated_sae_layers.layers.auxk_residual import AuxKPrediction, AuxKResidual
from gated_sae_layers.layers.prefix_mask import PrefixMask
from gated_sae_layers.layers.skip_connection import SkipConnection
from gated_sae_layers.layers.unit_norm_decoder import UnitNormDecoder
from gated_sae_layers.losses import AuxKLoss, AuxKTargetLoss, ReconstructionLoss
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


def sae_input_and_decoder(input_dim, latent_dim, kernel_constraint="unit_norm_rows",
                          remove_parallel_gradient=False, dtype=None):
    """The model input, the decoder and the centered input every SAE starts from.

    `DictionaryEnds(input_dim, latent_dim, ...)` of an SAE, as a tuple.

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
    ends = DictionaryEnds(input_dim, latent_dim, kernel_constraint=kernel_constraint,
                          remove_parallel_gradient=remove_parallel_gradient, dtype=dtype)
    return ends.activations, ends.decoder, ends.encoder_input


class DictionaryEnds:
    """The two ends of a dictionary: what the encoder reads, what the decoder writes.

    ```
    SAE (output_dim=None):   encoder reads x - b_dec;  y_hat = f W_dec + b_dec
    transcoder:              encoder reads x;          y_hat = f W_dec + b_dec
    skip transcoder:         encoder reads x;          y_hat = f W_dec + b_dec + x W_skip
    ```

    An SAE reconstructs its input `x`; a transcoder (Dunefsky, Chlenski &
    Nanda 2024, arXiv:2406.11944) predicts another place `y` of the model
    (an MLP block's output from its input) and trains on `fit(x, y)`; a skip
    transcoder (Paulo, Shabalin & Belrose 2025, arXiv:2501.18823) adds the
    linear `x W_skip` (`SkipConnection`). A transcoder's encoder reads `x`
    uncentered, as in SAELens's `Transcoder` and sparsify's `transcode=True`:
    `b_dec` lives in the output space. Every builder of the kit assembles
    through this, so every encoder makes a transcoder.

    Args:
        input_dim: int, the width of `x`.
        latent_dim: int, the number of latents.
        output_dim: `None` (an SAE: `y = x`) or int, the width of the target
            `y` (a transcoder, even where it equals `input_dim`).
        skip: bool, add `x W_skip` (needs `output_dim`).
        kernel_constraint, remove_parallel_gradient, dtype: of the decoder
            (see `UnitNormDecoder`).
        zero_decoder: bool, a transcoder's decoder starts at `W_dec = 0`
            with free rows (no unit-norm constraint): sparsify's transcoder
            initialization, so a fresh transcoder predicts `b_dec (+ x W_skip)`
            and its latents start from nothing. The k-sparse builders set it
            for transcoders (on a MiniLM MLP block it gave a held-out FVU of
            0.109 against 0.119 for random unit rows:
            `benchmarks/quality/RESULTS.md`).

    Attributes:
        activations: the `keras.Input` named `"activations"`,
            `(batch, input_dim)`.
        decoder: the `UnitNormDecoder` named `"decoder"`, `W_dec` of shape
            `(latent_dim, output_dim)`.
        encoder_input: what the encoder reads: `x - b_dec` (SAE) or `x`.
        skip: `None` or the `SkipConnection` named `"skip"`.
        is_transcoder: bool, `output_dim` was given.
        output_dim: int, the width of the reconstruction (`input_dim` for
            an SAE).

    Example:

    >>> ends = DictionaryEnds(8, 32, output_dim=4, skip=True)
    >>> tuple(ends.reconstruct(keras.Input((32,))).shape)
    (None, 4)
    """

    def __init__(self, input_dim, latent_dim, output_dim=None, skip=False,
                 kernel_constraint="unit_norm_rows", remove_parallel_gradient=False,
                 dtype=None, zero_decoder=False):
        check_bool(skip, "skip")
        if output_dim is not None:
            output_dim = _validation.check_positive_int(output_dim, "output_dim")
        elif skip:
            raise ValueError(
                "`skip=True` makes a skip transcoder, which predicts a target `y` "
                "from `x`: pass its width as `output_dim`. Received: output_dim=None, "
                "skip=True")
        self.is_transcoder = output_dim is not None
        if zero_decoder and not self.is_transcoder:
            raise ValueError(
                "`zero_decoder=True` is a transcoder's initialization: an SAE starts "
                "with unit-norm rows and W_enc = W_dec^T. Received: output_dim=None")
        self.latent_dim = latent_dim
        self.output_dim = input_dim if output_dim is None else output_dim
        self.activations = keras.Input(shape=(input_dim,), name="activations")
        self.decoder = UnitNormDecoder(
            latent_dim, self.output_dim,
            kernel_constraint=None if zero_decoder else kernel_constraint,
            remove_parallel_gradient=remove_parallel_gradient, name="decoder", dtype=dtype,
            **({"kernel_initializer": "zeros"} if zero_decoder else {}))
        self.encoder_input = (self.activations if self.is_transcoder
                              else self.decoder(self.activations, mode="center"))
        self.skip = (SkipConnection(self.output_dim, name="skip", dtype=dtype)
                     if skip else None)

    def reconstruct(self, latents, frozen=False):
        """`y_hat = f W_dec + b_dec (+ x W_skip)`, `(batch, output_dim)`.

        `frozen=True` decodes through `stop_gradient` of every weight (the
        gated encoder's auxiliary reconstruction: `mode="frozen"` of the
        decoder, `frozen=True` of the skip).
        """
        decoded = self.decoder(latents, mode="frozen" if frozen else "decode")
        if self.skip is None:
            return decoded
        return self.skip([decoded, self.activations], frozen=frozen)

    def aux_target_output(self, reconstruction, aux_latents, dtype=None):
        """The output the AuxK loss reads, and that loss, `(output, loss_class)`.

        An SAE: `AuxKResidual` (`e - e_hat`) with `AuxKLoss`; a transcoder,
        whose target is not in the graph: `AuxKPrediction`
        (`stop_gradient(y_hat) + e_hat`) with `AuxKTargetLoss`.
        """
        if not self.is_transcoder:
            return (auxk_residual(self.activations, self.decoder, reconstruction,
                                  aux_latents, dtype), AuxKLoss)
        aux_prediction = self.decoder(aux_latents, use_bias=False)
        return (AuxKPrediction(name="auxk_prediction", dtype=dtype)(
            [reconstruction, aux_prediction]), AuxKTargetLoss)

    def initialize_encoder(self, encoder, scale=1.0):
        """Starts `W_enc`: `scale * W_dec^T` (SAE), `scale` times random unit columns
        (transcoder, whose `W_enc` and `W_dec` live in different spaces).

        Call it once the model is built.
        """
        if not self.is_transcoder:
            tie_encoder_to_decoder(encoder, self.decoder, scale)
            return
        kernel = encoder.input_kernel
        columns = keras.random.normal(tuple(kernel.shape))
        columns = columns / ops.maximum(
            ops.sqrt(ops.sum(ops.square(columns), axis=0, keepdims=True)), 1e-12)
        kernel.assign(columns * scale)

    def record(self):
        """The builder arguments these ends add to `record_architecture`."""
        return transcoder_arguments(self.output_dim if self.is_transcoder else None,
                                    self.skip is not None)


def transcoder_arguments(output_dim, skip):
    """`{}` for an SAE; `{"output_dim": ..., "skip": ...}` for a transcoder.

    What a builder adds to `record_architecture` (an SAE's record stays as
    it was before transcoders existed).
    """
    if output_dim is None:
        return {}
    return {"output_dim": output_dim, "skip": skip}


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
        (an SAE) or random unit columns (a transcoder, whose `W_dec` starts
        at zero with free rows).
    """
    # A k-sparse transcoder starts with W_dec = 0 and free rows (sparsify's
    # initialization, measured better: see `DictionaryEnds`).
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
    ends.initialize_encoder(encoder)
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
