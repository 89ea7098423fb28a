"""Callbacks for SAE training: decoder renormalization and sparsity warm-up."""

import keras
import numpy as np
from keras import ops

from gated_sae_layers._validation import FLOAT32_MAX, check_positive_int, check_real
from gated_sae_layers.constraints import normalize_rows
from gated_sae_layers.layers.unit_norm_decoder import unit_norm_decoders


# The smallest positive normal float32: an `epsilon` below it (or above
# `FLOAT32_MAX`) is 0 or Inf in the float32 division of `normalize_rows`.
_FLOAT32_TINY = float(np.finfo("float32").tiny)


def _check_epsilon(epsilon):
    """`epsilon` as a float, or raises unless float32 holds it as a number > 0."""
    expected = ("a finite number > 0 that float32 can hold (from "
                f"{_FLOAT32_TINY:.4g} to {FLOAT32_MAX:.4g}): rows of smaller "
                "norm are divided by it")
    value = check_real(epsilon, "epsilon", expected)
    if not _FLOAT32_TINY <= value <= FLOAT32_MAX:  # NaN fails too
        raise ValueError(f"`epsilon` must be {expected}. Received: epsilon={epsilon!r}")
    return value


class DecoderNormalizer(keras.callbacks.Callback):
    """Renormalizes the rows of every `UnitNormDecoder` kernel to unit norm.

    `w_i <- w_i / max(||w_i||, epsilon)` at the start of training and after
    every batch (or epoch).

    When is it needed? With the default `UnitNormRows` constraint the
    decoder is already renormalized inside the compiled step after every
    update, and this callback only repeats that work, more slowly (eagerly,
    between steps). Use it when the constraint is off
    (`UnitNormDecoder(..., kernel_constraint=None)`), or when weights were
    loaded or assigned from elsewhere (a checkpoint of another library, a
    hand-made dictionary): the constraint never touches weights until the
    first optimizer step, while this callback fixes them before it.

    Args:
        frequency: `"batch"` (default) or `"epoch"`.
        epsilon: float > 0 (a normal float32), rows with norm below it are
            divided by `epsilon`.

    Example:

    ```python
    model.fit(x, epochs=3, callbacks=[gsl.DecoderNormalizer()])
    ```
    """

    def __init__(self, frequency="batch", epsilon=1e-8):
        if not isinstance(frequency, str):
            raise TypeError(
                "`frequency` must be 'batch' or 'epoch'. Received: "
                f"frequency={frequency!r} of type {type(frequency).__name__}"
            )
        if frequency not in ("batch", "epoch"):
            raise ValueError(
                "`frequency` must be 'batch' or 'epoch'. "
                f"Received: frequency={frequency!r}"
            )
        epsilon = _check_epsilon(epsilon)
        super().__init__()
        self.frequency = frequency
        self.epsilon = epsilon

    def normalize(self):
        decoders = unit_norm_decoders(self.model)
        if not decoders:
            raise ValueError(
                "DecoderNormalizer found no UnitNormDecoder layer in the model "
                f"'{self.model.name}'."
            )
        for decoder in decoders:
            decoder.kernel.assign(normalize_rows(decoder.kernel, self.epsilon))

    def on_train_begin(self, logs=None):
        self.normalize()

    def on_train_batch_end(self, batch, logs=None):
        if self.frequency == "batch":
            self.normalize()

    def on_epoch_end(self, epoch, logs=None):
        if self.frequency == "epoch":
            self.normalize()


def find_sparsity_penalties(model):
    """The sparsity terms of a `SparseAutoencoder` (`model.sparsity_penalties()`)."""
    penalties = getattr(model, "sparsity_penalties", None)
    return penalties() if callable(penalties) else []


def read_sparsity_coefficients(model, refusal):
    """`[(loss, coefficient)]` of every sparsity term of `model`, read now.

    The callbacks that scale the coefficients (`SparsityWarmup`, `TargetL0`)
    read them in `set_model`, before any callback's `on_train_begin` can
    restore a checkpointed coefficient into the variables.

    Args:
        model: the model `fit` trains.
        refusal: the message of the `ValueError` raised when `model` has no
            sparsity term (a TopK-family SAE, or not a `SparseAutoencoder`).

    Returns:
        A list of `(loss term, its coefficient as a Python float)`.
    """
    penalties = find_sparsity_penalties(model)
    if not penalties:
        raise ValueError(refusal)
    return [(loss, float(ops.convert_to_numpy(loss.coefficient))) for loss in penalties]


class SparsityWarmup(keras.callbacks.Callback):
    """Ramps every sparsity coefficient linearly from 0 over the first `steps` steps.

    At optimizer step `t` the coefficient is `target * min(1, t / steps)`,
    where `target` is the coefficient when `fit` set up its callbacks. The
    ramp is written into the coefficient variable before each batch, so it
    acts on that very step; once the ramp is done the callback stops
    touching the model. The target coefficient is put back however `fit`
    ends: normally, with an error (a NaN batch), or interrupted (Ctrl-C).

    Resuming is exact in any callback order: the target is read before any
    callback's `on_train_begin`, so a `keras.callbacks.BackupAndRestore`
    that restores a half-ramped coefficient from its checkpoint does not
    become the target, and the ramp continues from the restored optimizer
    step.

    A sparsity warm-up is common SAE practice (it keeps latents from dying
    early, when the dictionary is still random).

    Args:
        steps: int > 0, the length of the ramp in optimizer steps.

    Example:

    ```python
    model.fit(x, epochs=10, callbacks=[gsl.SparsityWarmup(steps=500)])
    ```
    """

    def __init__(self, steps):
        super().__init__()
        self.steps = check_positive_int(steps, "steps")
        self._targets = None
        self._done = False
        # A `TargetL0` in the same `fit` takes over the ramp (it sets this).
        self.controller = None

    def set_model(self, model):
        super().set_model(model)
        # Read here, before any callback's `on_train_begin` can restore a
        # checkpointed, half-ramped coefficient into the variable.
        self._targets = read_sparsity_coefficients(
            model,
            "SparsityWarmup needs a SparseAutoencoder with a sparsity term "
            f"loss term. Received: a model of type {type(model).__name__}")
        self._done = False

    def on_train_batch_begin(self, batch, logs=None):
        if self._done or self.controller is not None:
            return
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        fraction = min(1.0, step / self.steps)
        for loss, target in self._targets:
            loss.coefficient.assign(target * fraction)
        self._done = fraction >= 1.0

    def needs_every_batch(self):
        """True while ramping: `fit` then runs one step per dispatch."""
        return not self._done and self.controller is None

    def restore(self):
        """Puts the target coefficients back into the model."""
        if self.controller is not None:
            return
        for loss, target in self._targets or ():
            loss.coefficient.assign(target)

    def on_train_end(self, logs=None):
        self.restore()

    def on_train_error(self, error):
        """Called by `SparseAutoencoder.fit` when it raises (Keras then skips
        `on_train_end`)."""
        self.restore()
