"""Latents weighted by their decoder row norms, for the norm-weighted L1 penalty."""

import keras
from keras import ops

from gated_sae_layers._validation import check_floating_input, check_positive_int
from gated_sae_layers.layers.unit_norm_decoder import UnitNormDecoder
from gated_sae_layers.sparse.kernels import gather_vector


def block_norms(kernel, blocks):
    """`||W_dec[j, l]||` per block `l` of columns and latent `j`: `(blocks, latent_dim)`.

    `kernel` is `(latent_dim, blocks * width)`; block `l` is its columns
    `l * width` to `(l + 1) * width` (a crosscoder's layer `l`).
    """
    latent_dim, columns = tuple(kernel.shape)
    if columns % blocks:
        raise ValueError(
            f"The decoder's {columns} columns do not split into {blocks} equal "
            f"blocks. Received: W_dec of shape {(latent_dim, columns)}, blocks={blocks}")
    rows = ops.reshape(kernel, (latent_dim, blocks, columns // blocks))
    return ops.transpose(ops.sqrt(ops.sum(ops.square(rows), axis=-1)))


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class DecoderNormWeighting(keras.layers.Layer):
    """Weights each latent by the norm of its decoder row: `f_j * ||W_dec[j]||`.

    ```
    out[..., j] = f[..., j] * ||W_dec[j]||_2        # decoder.row_norms()
    ```

    The L1 penalty of this output, `lambda * sum_j f_j ||W_dec[j]||`, is the
    sparsity term of Anthropic's April 2024 update of the ReLU SAE (Conerly
    et al., "Circuits Updates - April 2024"), which trains the decoder rows
    without the unit-norm constraint: growing a row no longer dodges the
    penalty. `build_relu_sae(..., weight_by_decoder_norm=True)` uses it.

    With `blocks=n` (a crosscoder over `n` layers, whose decoder rows are
    the `n` layers' rows side by side) each latent is weighted by the sum of
    its per-layer norms, `f_j * sum_l ||W_dec[j, l]||`: the penalty of
    Lindsey et al. 2024 ("Sparse crosscoders for cross-layer features and
    model diffing").

    The layer has no weights: it reads `decoder.row_norms()` of the model's
    `UnitNormDecoder` (gradients flow to `W_dec` through the norms). Saved
    with `model.save` and loaded with `keras.saving.load_model`, it points
    at the reloaded model's decoder again (Keras restores the shared layer,
    as for tied embeddings). A copy made by `from_config` outside
    `keras.saving` has no decoder until one is set:
    `layer.decoder = model.decoder` (`fold_normalization` does this).

    Args:
        decoder: the `UnitNormDecoder` whose row norms weight the latents.
        blocks: int >= 1, the number of equal blocks of columns of `W_dec`
            whose norms are summed (1: the row norm).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: float tensor `(..., latent_dim)`, the latents `f`.

    Returns:
        `(..., latent_dim)`, the weighted latents.

    Example:

    >>> import numpy as np
    >>> decoder = UnitNormDecoder(latent_dim=2, output_dim=2, kernel_constraint=None)
    >>> decoder.build()
    >>> _ = decoder.kernel.assign(np.array([[3.0, 4.0], [0.0, 0.5]], "float32"))
    >>> weighting = DecoderNormWeighting(decoder)
    >>> np.asarray(weighting(np.array([[1.0, 2.0]], "float32"))).tolist()
    [[5.0, 1.0]]
    """

    def __init__(self, decoder, blocks=1, **kwargs):
        if isinstance(decoder, dict):  # a serialized decoder not shared on load
            decoder_config, decoder = decoder, None
        elif isinstance(decoder, UnitNormDecoder):
            decoder_config = None
        else:
            raise TypeError(
                "`decoder` must be a `UnitNormDecoder` (the model's decoder). "
                f"Received: decoder={decoder!r} of type {type(decoder).__name__}")
        super().__init__(**kwargs)
        self.blocks = check_positive_int(blocks, "blocks")
        object.__setattr__(self, "_decoder_config", decoder_config)
        self.decoder = decoder

    def __setattr__(self, name, value):
        # The decoder belongs to the model: it is referenced, not tracked as
        # a sublayer (its weights are saved and counted once, by the model).
        if name == "decoder":
            if value is not None and not isinstance(value, UnitNormDecoder):
                raise TypeError(
                    "`decoder` must be a `UnitNormDecoder`. Received: "
                    f"decoder of type {type(value).__name__}")
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    def build(self, input_shape):
        pass

    def call(self, inputs):
        check_floating_input(inputs, self.name)
        return inputs * ops.cast(self._row_norms(), inputs.dtype)

    def sparse_call(self, inputs):
        """`call` on a `SparseLatents`: each slot times its latent's row norm."""
        check_floating_input(inputs, self.name)
        norms = gather_vector(self._row_norms(), inputs.indices)
        return inputs.with_values(inputs.values * ops.cast(norms, inputs.dtype))

    def _row_norms(self):
        if self.decoder is None:
            raise ValueError(
                f"Layer '{self.name}' has no decoder: it was rebuilt by "
                "`from_config` outside `keras.saving`, which cannot restore a "
                "shared layer. Set `layer.decoder = model.decoder` (a "
                "`SparseAutoencoder` does this itself), or save and load the "
                "model with `model.save` / `keras.saving.load_model`.")
        if self.blocks == 1:
            return self.decoder.row_norms()
        return ops.sum(block_norms(self.decoder.kernel, self.blocks), axis=0)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(tuple(inputs.shape), dtype=self.compute_dtype)

    def get_config(self):
        decoder = self._decoder_config if self.decoder is None else (
            keras.saving.serialize_keras_object(self.decoder))
        return {**super().get_config(), "decoder": decoder, "blocks": self.blocks}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        decoder = config["decoder"]
        if isinstance(decoder, dict) and "shared_object_id" in decoder:
            # Inside `keras.saving`: the model's own decoder, already rebuilt.
            decoder = keras.saving.deserialize_keras_object(decoder)
        config["decoder"] = decoder
        return cls(**config)


def attach_decoder(model, decoder):
    """Points every `DecoderNormWeighting` of `model` without a decoder at
    `decoder` (after a `from_config` outside `keras.saving`)."""
    from gated_sae_layers._keras_compat import sublayers

    for layer in sublayers(model):
        if isinstance(layer, DecoderNormWeighting) and layer.decoder is None:
            layer.decoder = decoder
