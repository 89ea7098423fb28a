"""Per-variable learning-rate multipliers, applied by `SparseAutoencoder.compile`.

A model may ask its optimizer to step some variables `m` times as far as the
rest: `SparseAutoencoder(..., learning_rate_multipliers={"decoder/kernel":
3.0})`, or `build_gated_sae(..., decoder_learning_rate_multiplier=3.0)`. A
multiplier may also change as training goes: a Keras
`LearningRateSchedule` of the optimizer's step, e.g.
`keras.optimizers.schedules.PolynomialDecay(5.0, steps, 1.0)` (5x at step
0, falling linearly to 1x at `steps`, 1x after). The
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
from gated_sae_layers._validation import check_positive_float, check_positive_int


Schedule = keras.optimizers.schedules.LearningRateSchedule


def check_multiplier(value, name):
    """One multiplier: a float > 0, or a `LearningRateSchedule` (or its
    serialized dict, as saved with a model) whose value at step 0 is a
    finite float > 0. Returns the float or the schedule."""
    if isinstance(value, dict):
        try:
            schedule = keras.optimizers.schedules.deserialize(value)
        except (TypeError, ValueError, KeyError) as error:
            schedule = error
        if not isinstance(schedule, Schedule):
            raise ValueError(
                f"`{name}` is a dict, so it must be a serialized Keras "
                f"LearningRateSchedule (`keras.optimizers.schedules.serialize`). "
                f"Received: {name}={value!r} (deserialized: {schedule!r})")
        value = schedule
    if not isinstance(value, Schedule):
        return check_positive_float(value, name)
    try:
        start = float(keras.ops.convert_to_numpy(value(0)))
    except Exception as error:    # a schedule that cannot be evaluated
        raise ValueError(
            f"`{name}`: the schedule {value!r} failed at step 0: {error}") from None
    check_positive_float(start, f"{name}(step 0)")
    return value


def serialize_multiplier(value):
    """A multiplier as JSON-ready Python: the float, or the schedule's
    `keras.optimizers.schedules.serialize` dict."""
    if isinstance(value, Schedule):
        return keras.optimizers.schedules.serialize(value)
    return value


DECODER_MULTIPLIER_START = 5.0


def falling_multiplier(total_steps, start=DECODER_MULTIPLIER_START):
    """The recipe's decoder multiplier: `start` at step 0, falling linearly
    to 1 at `total_steps` (1 after).

    `keras.optimizers.schedules.PolynomialDecay(start, total_steps, 1.0)`,
    for `build_gated_sae(..., decoder_learning_rate_multiplier=...)` or
    `model.learning_rate_multipliers`. Measured best of the settings tried
    (issue 23, `docs/training_recipe.md`): SAELens's free decoder rows start
    at norm 0.1 and grow, so they turn fast early and slower later; a
    unit-norm decoder gets the same pace from this multiplier.

    Args:
        total_steps: int >= 1, the optimizer steps of the training run (the
            `total_steps` of its `WarmupStableDecay`).
        start: float >= 1, the multiplier at step 0 (1 is the paper's
            constant step).

    Example:

    >>> import gated_sae_layers as gsl
    >>> schedule = gsl.falling_multiplier(100)
    >>> [round(float(schedule(step)), 2) for step in (0, 50, 100, 200)]
    [5.0, 3.0, 1.0, 1.0]
    """
    total_steps = check_positive_int(total_steps, "total_steps")
    start = check_positive_float(start, "start")
    if start < 1.0:
        raise ValueError(
            f"`start` must be >= 1: the multiplier falls from it to 1. Received: "
            f"start={start}")
    return keras.optimizers.schedules.PolynomialDecay(start, total_steps, 1.0)


def check_multipliers(value):
    """`None` or `{variable path: multiplier}` (see `check_multiplier`);
    returns a plain dict (maybe empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(
            "`learning_rate_multipliers` must be None or a dict {variable path: "
            f"float > 0 or LearningRateSchedule}}, e.g. {{'decoder/kernel': 3.0}}. "
            f"Received: {value!r}")
    return {path: check_multiplier(multiplier, f"learning_rate_multipliers[{path!r}]")
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
        if isinstance(multiplier, Schedule):
            learning_rate = keras.ops.convert_to_tensor(learning_rate)
            learning_rate = learning_rate * keras.ops.cast(
                multiplier(optimizer.iterations), learning_rate.dtype)
        elif multiplier is not None:
            learning_rate = learning_rate * multiplier
        return update_step(optimizer, gradient, variable, learning_rate)

    optimizer.update_step = scaled_update_step
