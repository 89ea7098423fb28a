"""The residual left for the AuxK loss of Gao et al. 2024 (arXiv:2406.04093)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class AuxKResidual(keras.layers.Layer):
    """What the AuxK latents fail to explain of the main reconstruction's error.

    ```
    e     = x - stop_gradient(x_hat)          # the main model's residual
    e_hat = z_aux @ W_dec                     # AuxK latents, decoded without b_dec
    out   = e - e_hat                         # per row; 0 for rows with z_aux == 0
    ```

    Gao et al. 2024, "Scaling and evaluating sparse autoencoders",
    arXiv:2406.04093, sec. A.2: `L_aux = ||e - e_hat||^2` (`AuxKLoss`
    squares and sums this output). Rows whose AuxK latents are all zero
    (no dead latent, or none with a positive pre-activation) give 0: their
    term would be the constant `||e||^2`, which has no gradient, so only
    the logged value differs from the paper's.

    The layer has no weights. Feed it `e_hat` decoded without `b_dec` by the
    model's own decoder, `decoder(z_aux, use_bias=False)`, so `b_dec` gets
    no gradient from the AuxK loss. (The dead-latent tracking and `z_aux`
    itself come from the encoder: `AuxKEncoder`.)

    Call arguments:
        inputs: a list `[activations, reconstruction, aux_prediction,
            aux_latents]`: `x` and `x_hat` `(batch, input_dim)`, `e_hat`
            `(batch, input_dim)` and `z_aux` `(batch, latent_dim)`.

    Returns:
        `(batch, input_dim)`, `e - e_hat` (zero rows where `z_aux` is 0).

    Example:

    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0], [1.0, 2.0]], "float32")
    >>> x_hat = np.array([[0.5, 2.0], [0.5, 2.0]], "float32")
    >>> e_hat = np.array([[0.25, 0.0], [0.25, 0.0]], "float32")
    >>> z_aux = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], "float32")
    >>> np.asarray(AuxKResidual()([x, x_hat, e_hat, z_aux])).tolist()
    [[0.25, 0.0], [0.0, 0.0]]
    """

    def call(self, inputs):
        activations, reconstruction, aux_prediction, aux_latents = inputs
        residual = activations - ops.stop_gradient(reconstruction)
        has_aux = ops.any(aux_latents > 0, axis=-1, keepdims=True)
        return ops.where(has_aux, residual - aux_prediction,
                         ops.zeros_like(residual))

    def sparse_call(self, inputs):
        """`call` with `aux_latents` a `SparseLatents` (the sparse training path)."""
        activations, reconstruction, aux_prediction, aux_latents = inputs
        return self.call([activations, reconstruction, aux_prediction,
                          aux_latents.values])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class AuxKPrediction(keras.layers.Layer):
    """The AuxK prediction of the target, for dictionaries whose target is not their input.

    ```
    out = stop_gradient(y_hat) + e_hat        # e_hat = z_aux @ W_dec
    ||y - out||^2 = ||e - e_hat||^2           # e = y - stop_gradient(y_hat)
    ```

    A transcoder reconstructs a target `y` (`fit(x, y)`) that is not in its
    graph, so `AuxKResidual` cannot form `e = y - y_hat` there. This layer
    hands the loss `stop_gradient(y_hat) + e_hat` instead, and
    `AuxKTargetLoss` squares `y - out`: the same `||e - e_hat||^2` of Gao et
    al. 2024 (arXiv:2406.04093, sec. A.2), with the same gradients. Rows
    without AuxK latents log `||e||^2` (a constant, no gradient) where
    `AuxKResidual` logs 0.

    Call arguments:
        inputs: a list `[reconstruction, aux_prediction]`, both
            `(batch, output_dim)`.

    Returns:
        `(batch, output_dim)`.

    Example:

    >>> import numpy as np
    >>> y_hat = np.array([[0.5, 2.0]], "float32")
    >>> e_hat = np.array([[0.25, 0.0]], "float32")
    >>> np.asarray(AuxKPrediction()([y_hat, e_hat])).tolist()
    [[0.75, 2.0]]
    """

    def call(self, inputs):
        reconstruction, aux_prediction = inputs
        return ops.stop_gradient(reconstruction) + aux_prediction

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
