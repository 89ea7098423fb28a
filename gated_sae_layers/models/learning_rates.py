"""Per-variable learning-rate multipliers, applied by `SparseAutoencoder.compile`.

A model may ask its optimizer to step some variables `m` times as far as the
rest: `SparseAutoencoder(..., learning_rate_multipliers={"decoder/kernel":
3.0})`, or `build_gated_sae(..., decoder_learning_rate_multiplier=3.0)`. The
record is saved with the model; `compile` (and so a loaded model's
recompilation) makes the optimizer scale the learning rate it passes to its
`update_step` for those variables, so it works with every Keras optimizer
(SGD, Adam, ...), its schedule, clipping and a `LossScaleOptimizer`, on
TensorFlow and JAX (tested; not yet under a `tf.distribute` strategy).

Why a decoder wants it: Adam's step is about `lr` per element whatever the
gradient's scale, so a weight row of norm `r` turns by an angle proportional
to `lr / r` per step. A unit-norm decoder row turns 10x slower than the `0.1 W_dec^T`
columns of the gated SAE's encoder start, or than SAELens's free decoder
rows, which start at norm 0.1. `docs/training_recipe.md` has the measurements.
"""

import keras

from gated_sae_layers import _keras_compat as compat
from gated_sae_layers._validation import check_positive_float


def check_multipliers(value):
    """`None` or `{variable path: float > 0}`; returns a plain dict (maybe empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(
            "`learning_rate_multipliers` must be None or a dict {variable path: "
            f"float > 0}}, e.g. {{'decoder/kernel': 3.0}}. Received: {value!r}")
    return {path: check_positive_float(multiplier, f"learning_rate_multipliers[{path!r}]")
            for path, multiplier in value.items()}


def scaled_variables(model, multipliers):
    """`[(variable, multiplier)]` for each path of `multipliers` among the
    model's trainable variables; a `ValueError` names any path not there."""
    by_path = {variable.path: variable for variable in model.trainable_variables}
    missing = sorted(set(multipliers) - set(by_path))
    if missing:
        raise ValueError(
            f"`learning_rate_multipliers` names variables the model does not train: "
            f"{missing}. Its trainable variables: {sorted(by_path)}")
    return [(by_path[path], multiplier) for path, multiplier in multipliers.items()]


def apply_multipliers(optimizer, model, multipliers):
    """Makes `optimizer` step each variable of `multipliers` that many times as far.

    Wraps the `update_step` of the optimizer instance (of its inner optimizer
    under a `LossScaleOptimizer`); the variables are matched by the
    optimizer's own index of its variables, so the raw `tf.Variable`s the
    TensorFlow backend passes to `update_step` match too. Calling it again
    replaces the earlier multipliers.
    """
    scaled = scaled_variables(model, multipliers)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    update_step = type(optimizer).update_step
    if not scaled:
        vars(optimizer).pop("update_step", None)
        return
    indices = {}

    def scaled_update_step(gradient, variable, learning_rate):
        if not indices:                      # the optimizer is built by now
            for scaled_variable, multiplier in scaled:
                indices[compat.optimizer_variable_index(
                    optimizer, scaled_variable)] = multiplier
        multiplier = indices.get(compat.optimizer_variable_index(optimizer, variable))
        if multiplier is not None:
            learning_rate = learning_rate * multiplier
        return update_step(optimizer, gradient, variable, learning_rate)

    optimizer.update_step = scaled_update_step
