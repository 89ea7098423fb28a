"""The base class that marks a layer as an SAE encoder."""

import keras


class SparseEncoder(keras.layers.Layer):
    """Base of every SAE encoder layer of the kit.

    An encoder takes the centered input `x - b_dec` of shape
    `(..., input_dim)` and returns a dict that holds at least `"latents"`,
    `(..., latent_dim)`, plus whatever its loss terms read. Subclasses set
    `self.latent_dim`. `SparseAutoencoder.encoder` finds the model's encoder
    through this class.
    """
