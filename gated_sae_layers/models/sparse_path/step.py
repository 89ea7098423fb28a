"""The loss and gradients of one training step on the sparse path, JAX and TensorFlow.

```
selection = encoder.sparse_selection(x - b_dec)     # one dense matmul, no gradient
if some row's support exceeds the slots:             # (never for TopK)
    loss, gradients = the dense step                 # the model's own graph
else:
    loss, gradients = the sparse step                # the graph on the slots
```

Both branches update the same state (non-trainable variables, loss-term
trackers, metric terms, the fallback statistics) and return the same
structure, so `finite_step` applies the update after either one. The
branch is a `cond` inside the compiled step; only the taken branch runs.
"""

import keras
from keras import ops

from gated_sae_layers.models.sparse_path import graph
from gated_sae_layers.sparse import host


def _current(scope, variables, before):
    values = []
    for variable, old in zip(variables, before):
        new = scope.get_current_value(variable)
        values.append(old if new is None else new)
    return values


def _sparse_variants(model, selection, run, cond):
    """`run(selection)`, branching on `extra["aux_needed"]` when the encoder has one.

    Each branch differentiates on its own (no gradient through the `cond`),
    so the usual step, with no dead latent, does none of the AuxK work.
    """
    needed = selection.extra.get("aux_needed")
    if needed is None:
        return run(selection)
    return cond(needed, lambda: run(graph.with_aux(model, selection)),
                lambda: run(selection))


def _ordered(plan, selection, x, y):
    """The batch and its selection with the rows ordered by support size, largest first.

    For a data-dependent encoder with `plan.row_blocks > 1`: the kernels'
    loops then run per block of rows, each to its own largest support. The
    loss and every metric are means or sums over rows, so the order changes
    nothing but the summation order.
    """
    # (BatchTopK's selection carries row-shaped `extra` entries: it keeps its order.)
    if (plan.row_blocks == 1 or selection.support_sizes is None or not selection.slots
            or selection.extra):
        return selection, x, y
    if plan.host_kernels and plan.encoder.compute_dtype == "float32":
        # The Numba loops stop row by row: no reordering, each row its own end.
        return selection.with_row_ends(), x, y
    order, selection = selection.by_support_size(plan.row_blocks)

    def take(structure):
        if structure is None:
            return None
        return keras.tree.map_structure(lambda t: ops.take(t, order, axis=0), structure)

    return selection, take(x), take(y)


def _record(model, plan, selection, fallback, x, y, y_pred):
    """Updates the metric terms and the sparse-path statistics (stateful)."""
    model.update_metric_terms(x, y, y_pred)
    stats = model.sparse_path_stats
    if stats is not None:
        stats.update_state(fallback, selection.largest_support())


# ----------------------------------------------------------------------- JAX
def jax_loss_and_updates(model, plan, trainable, non_trainable, metric_state, x, y,
                         optimizer_state):
    """`(loss, gradients, non_trainable, metric_state)` of one step, stateless.

    `metric_state` comes back with the loss-term trackers, the metric terms
    and the statistics updated (not Keras's `loss` tracker).
    """
    with host.using(plan.host_kernels):
        return _jax_loss_and_updates(model, plan, trainable, non_trainable, metric_state,
                                     x, y, optimizer_state)


def _jax_loss_and_updates(model, plan, trainable, non_trainable, metric_state, x, y,
                          optimizer_state):
    import jax

    variables = list(zip(model.trainable_variables, trainable)) + list(
        zip(model.non_trainable_variables, non_trainable))
    with keras.StatelessScope(state_mapping=variables):
        selection = graph.select(model, x, plan.slots)
    selection, x, y = _ordered(plan, selection, x, y)

    def scaled(loss):
        mapping = list(zip(model.optimizer.variables, optimizer_state))
        with keras.StatelessScope(state_mapping=mapping):
            return model.optimizer.scale_loss(loss)

    def sparse_loss(trainable, selection):
        mapping = (list(zip(model.trainable_variables, trainable))
                   + list(zip(model.non_trainable_variables, non_trainable))
                   + list(zip(model.metrics_variables, metric_state)))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            y_pred = graph.sparse_outputs(model, x, selection)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            _record(model, plan, selection, False, x, y, y_pred)
        return scaled(loss), (
            loss,
            _current(scope, model.non_trainable_variables, non_trainable),
            _current(scope, model.metrics_variables, metric_state))

    def sparse_on(selection):
        (_, (loss, new_non_trainable, new_metrics)), gradients = jax.value_and_grad(
            sparse_loss, has_aux=True)(trainable, selection)
        return loss, gradients, new_non_trainable, new_metrics

    def sparse_step():
        with keras.StatelessScope(state_mapping=variables):
            return _sparse_variants(model, selection, sparse_on, jax.lax.cond)

    def dense_step():
        (_, aux), gradients = jax.value_and_grad(
            model.compute_loss_and_updates, has_aux=True)(
                trainable, non_trainable, metric_state, x, y, None, training=True,
                optimizer_variables=optimizer_state)
        loss, y_pred, new_non_trainable, new_metrics = aux
        with keras.StatelessScope(state_mapping=list(
                zip(model.metrics_variables, new_metrics))) as scope:
            _record(model, plan, selection, True, x, y, y_pred)
        return (loss, gradients, new_non_trainable,
                _current(scope, model.metrics_variables, new_metrics))

    if not plan.may_overflow:
        return sparse_step()
    return jax.lax.cond(selection.overflow(), dense_step, sparse_step)


# ---------------------------------------------------------------- TensorFlow
def tensorflow_loss_and_gradients(model, plan, x, y):
    """`(loss, gradients)` of one step; the state is updated as the step runs."""
    import tensorflow as tf

    selection, x, y = _ordered(plan, graph.select(model, x, plan.slots), x, y)
    variables = model.trainable_weights

    def step(forward, fallback):
        with tf.GradientTape() as tape:
            y_pred = forward()
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            scaled_loss = model.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
        _record(model, plan, selection, fallback, x, y, y_pred)
        # Both branches of the `cond` must return tensors for every variable.
        return loss, [ops.zeros_like(v) if g is None else g
                      for g, v in zip(gradients, variables)]

    def sparse_step():
        return _sparse_variants(
            model, selection,
            lambda chosen: step(lambda: graph.sparse_outputs(model, x, chosen), False),
            tf.cond)

    def dense_step():
        return step(lambda: model(x, training=True), True)

    if not plan.may_overflow:
        return sparse_step()
    return tf.cond(selection.overflow(), dense_step, sparse_step)
