"""A train step that changes nothing when its loss or a gradient is not finite.

Checking the data catches NaN/Inf activations, but not finite data whose
loss overflows float32 (a row at 1e19 gives a squared error of 1e38 times
the width), nor inputs no host check sees (a `keras.utils.PyDataset`, a
model's intermediate target). One such step turns every weight into NaN.
`SparseAutoencoder.train_step` therefore wraps Keras's step:

- the loss, the squared norm of every gradient (a gradient whose square
  overflows would put Inf into Adam's second moment and freeze that weight
  silently), and the metric state from the steps before are checked on the
  device, inside the compiled step;
- when any of them is not finite, the optimizer update is skipped (a
  `cond`), so weights, optimizer state and non-trainable variables keep
  their values (on TensorFlow, whose forward pass assigns non-trainable
  state as it runs, the step puts it back; under a `tf.distribute`
  strategy it does not, and a skipped step still counts in the dead-latent
  counters); a NaN enters the epoch's running mean of the loss in its
  place, which then stays NaN, so every later step of the epoch is skipped
  too;
- `NonFiniteLossGuard`, a callback `fit` adds, sees the NaN in the logs and
  raises a `ValueError`: the model then holds the weights of the last finite
  step.

Under a `LossScaleOptimizer` (float16 mixed precision) non-finite gradients
are expected now and then: that optimizer skips those steps itself, so only
the loss is checked.

It follows the structure of Keras's own `train_step` on each backend and
reaches Keras's private parts through `gated_sae_layers._keras_compat`.
"""

import keras
from keras import ops

from gated_sae_layers import _keras_compat as compat
from gated_sae_layers import distribution
from gated_sae_layers.models.sparse_path import step as sparse_step


def non_finite_step_message(where):
    """The text of the `ValueError` raised after a skipped step."""
    return (
        f"The training loss or a gradient became NaN or Inf {where}. fit() "
        "stopped without letting that step change any weight: the model "
        "holds the weights and optimizer state of the last finite step. "
        "Check that batch's data for NaN/Inf or huge values, normalize the "
        "activations (`estimate_norm_scale`), or lower the learning rate or "
        "the sparsity coefficient.")


def _floating(values):
    return [v for v in values if v is not None and keras.backend.is_float_dtype(
        keras.backend.standardize_dtype(v.dtype))]


def all_finite(values):
    """A boolean scalar: every floating value in `values` is finite."""
    checks = [ops.all(ops.isfinite(v)) for v in _floating(values)]
    if not checks:
        return ops.convert_to_tensor(True)
    return ops.all(ops.stack(checks))


def gradients_finite(gradients):
    """True when no gradient's sum of squares overflows float32.

    Stricter than `isfinite`: a finite gradient whose square overflows
    (|g| > 1.8e19) would still put Inf into Adam's second moment and freeze
    that weight for good, without a NaN anywhere.
    """
    squares = [ops.sum(ops.square(ops.cast(g, "float32")))
               for g in _floating(gradients)]
    return all_finite(squares)


def _checks_gradients(optimizer):
    return not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


# ----------------------------------------------------------------------- JAX
def guarded_train_step(model, state, logs, x, y=None, sample_weight=None,
                       skip_updates_metrics=False):
    """Keras's JAX `train_step`, skipping the update when it is not finite.

    `(state, logs, x, y)` -> `(state, logs, finite)`. The gradient step, the
    constraint, the non-trainable updates and (unless `skip_updates_metrics`)
    the metric updates sit in the true branch of one `lax.cond`, so a
    skipped step returns the weights untouched and a finite one updates them
    in place (the false branch needs no copy of the weights, unlike a
    `where` over them). With `skip_updates_metrics=True` (the stock loop) a
    skipped step still updates the metrics, so its NaN loss reaches the logs;
    otherwise it returns `state` and `logs` as they were.
    """
    import jax

    trainable, non_trainable, optimizer_state, metric_state = state
    plan = getattr(model, "sparse_plan", None)
    if plan is None:
        gradient_fn = jax.value_and_grad(
            model.compute_loss_and_updates, has_aux=True)
        (_, aux), gradients = gradient_fn(
            trainable, non_trainable, metric_state, x, y, sample_weight,
            training=True, optimizer_variables=optimizer_state)
        loss, y_pred, new_non_trainable, new_metric_state = aux
    else:
        # The sparse path updates the metric terms itself (`y_pred=None`).
        loss, gradients, new_non_trainable, new_metric_state = (
            sparse_step.jax_loss_and_updates(
                model, plan, trainable, non_trainable, metric_state, x, y,
                optimizer_state))
        y_pred = None
    finite = all_finite([loss] + list(metric_state))
    if _checks_gradients(model.optimizer):
        finite = ops.logical_and(finite, gradients_finite(gradients))

    def update_metrics(metric_state, logged_loss):
        return compat.update_metrics_variables(
            model, metric_state, logged_loss, x, y, y_pred)

    def update(operands):
        trainable, optimizer_state, gradients, new_non_trainable, metric_state = (
            operands[:5])
        trainable, optimizer_state = model.optimizer.stateless_apply(
            optimizer_state, gradients, trainable)
        new_logs, metric_state = update_metrics(metric_state, loss)
        return ((trainable, new_non_trainable, optimizer_state, metric_state),
                new_logs)

    def keep(operands):
        if not skip_updates_metrics:
            return state, operands[-1]
        # A NaN loss in the logs marks the skipped step, even when the loss
        # itself was finite and only a gradient overflowed.
        new_logs, metric_state = update_metrics(
            operands[4], ops.full_like(loss, float("nan")))
        return (trainable, non_trainable, optimizer_state, metric_state), new_logs

    state, logs = jax.lax.cond(
        finite, update, keep,
        (trainable, optimizer_state, gradients, new_non_trainable,
         new_metric_state, logs))
    return state, logs, finite


def jax_train_step(model, state, data):
    """`train_step(state, data)` of the stock JAX loop, guarded."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    # Both branches of the cond update the metrics (their logs must have
    # the same structure), so a skipped step's NaN loss reaches the logs.
    state, logs, _ = guarded_train_step(
        model, state, None, x, y, sample_weight, skip_updates_metrics=True)
    return logs, state


# ---------------------------------------------------------------- TensorFlow
def _apply_if(optimizer, finite, gradients, variables):
    import tensorflow as tf

    def apply():
        optimizer.apply(gradients, variables)
        return tf.constant(True)

    def skip():
        return tf.constant(False)

    if not tf.distribute.has_strategy() or (
            tf.__internal__.distribute.strategy_supports_no_merge_call()):
        tf.cond(finite, apply, skip)
        return

    # Under a MirroredStrategy the optimizer all-reduces the gradients with
    # a `merge_call`, which cannot sit in a replica-context `cond`: decide
    # in the cross-replica context, on every replica's flag at once.
    def cross_replica(strategy, not_finite, gradients, variables):
        not_finite = strategy.reduce(
            tf.distribute.ReduceOp.SUM, not_finite, axis=None)

        def apply_everywhere():
            strategy.extended.call_for_each_replica(
                optimizer.apply, args=(gradients, variables))
            return tf.constant(True)

        tf.cond(not_finite == 0, apply_everywhere, skip)

    tf.distribute.get_replica_context().merge_call(
        cross_replica,
        args=(tf.cast(tf.logical_not(finite), "int32"), gradients, variables))


def tensorflow_train_step(model, data):
    """`train_step(data)` of the TensorFlow loop, guarded."""
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    replicas = distribution.num_replicas_in_sync()
    variables = model.trainable_weights
    # The forward pass assigns non-trainable state (the dead-latent counters,
    # BatchTopK's threshold) as it runs: a skipped step puts it back.
    held = [] if tf.distribute.has_strategy() else [
        (v, tf.identity(v.value)) for v in model.non_trainable_variables]
    plan = getattr(model, "sparse_plan", None)
    if plan is None:
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred,
                                      sample_weight=sample_weight, training=True)
            scaled_loss = model.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
    else:
        # The sparse path updates the metric terms itself (`y_pred=None`).
        loss, gradients = sparse_step.tensorflow_loss_and_gradients(model, plan, x, y)
        y_pred = None
    finite = all_finite([loss] + list(model.metrics_variables))
    if _checks_gradients(model.optimizer):
        finite = ops.logical_and(finite, gradients_finite(gradients))
    _apply_if(model.optimizer, finite, gradients, variables)
    if held:
        def put_back():
            for variable, value in held:
                variable.assign(value)
            return tf.constant(False)

        tf.cond(finite, lambda: tf.constant(True), put_back)
    # A NaN loss in the logs marks a skipped step, even when the loss itself
    # was finite and only a gradient overflowed.
    logged_loss = tf.where(finite, loss * replicas, float("nan"))
    batch_size = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
    compat.loss_tracker(model).update_state(logged_loss, sample_weight=batch_size)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


# ----------------------------------------------------------------- callback
class NonFiniteLossGuard(keras.callbacks.Callback):
    """Raises `ValueError` once a skipped, non-finite step shows in the logs.

    `SparseAutoencoder.fit` adds it to Keras's stock loop (the JAX
    device-resident loop checks on the device instead). It reads the logs
    after every step, in the main thread: on JAX that waits for each step
    (Keras's callback thread would save that wait, but an error raised
    there reached `fit` at a moment that could leave a donated, deleted
    array in a variable).
    """

    coarse_batch_hooks = True

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, where):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        try:
            value = float(loss)
        except (TypeError, ValueError):
            return
        if value != value or value in (float("inf"), float("-inf")):
            self.model.stop_training = True
            raise ValueError(non_finite_step_message(where))

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"in epoch {self._epoch + 1}, by batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, f"in epoch {epoch + 1}")
