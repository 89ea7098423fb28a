"""The two ends of every dictionary: the model input, what the encoder reads, the decoder.

`DictionaryEnds` is where an SAE, a transcoder and a skip transcoder differ
(the builders assemble everything else the same way), with the pieces it
needs: `sae_input_and_decoder` (an SAE's ends as a tuple), `auxk_residual`
(the AuxK output of an SAE), `tie_encoder_to_decoder` and
`transcoder_arguments`. `assembly` re-exports them, so a builder copied into
your own file reads them from there.
"""

import keras
from keras import ops

from gated_sae_layers import _validation
from gated_sae_layers.layers.auxk_residual import AuxKPrediction, AuxKResidual
from gated_sae_layers.layers.skip_connection import SkipConnection
from gated_sae_layers.layers.unit_norm_decoder import UnitNormDecoder
from gated_sae_layers.losses import AuxKLoss, AuxKTargetLoss


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return value


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
        _check_bool(skip, "skip")
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


def tie_encoder_to_decoder(encoder, decoder, scale=1.0):
    """Tied initialization `W_enc = scale * W_dec^T` (Gao et al. 2024; Conerly et al. 2024).

    Assigns the transposed decoder kernel, `(input_dim, latent_dim)`, times
    `scale` to `encoder.input_kernel`; call it once the model is built.
    """
    encoder.input_kernel.assign(ops.transpose(decoder.kernel) * scale)
