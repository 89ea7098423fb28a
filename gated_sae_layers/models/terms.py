"""The `loss_terms` / `metric_terms` contract of `SparseAutoencoder`.

A model names, per output, the loss and the metrics that read it:
`loss_terms={"reconstruction": ReconstructionLoss(), ...}`,
`metric_terms={"latents": [L0()], ...}`. `resolve_terms` checks and
deserializes them; `serialize_terms` writes them into the model's config.
"""

import keras


def _deserialize(obj, kind):
    if isinstance(obj, dict) and "class_name" in obj:
        return keras.saving.deserialize_keras_object(obj)
    if kind == "loss":
        return keras.losses.get(obj)
    return keras.metrics.get(obj)


def resolve_terms(output_names, loss_terms, metric_terms):
    """`(losses, metrics)`: `{output: Loss}` and `{output: [Metric, ...]}`.

    Raises a `ValueError` when there is no loss term, a key names no output,
    or two terms share a logged name (or one is called `loss`).
    """
    output_names = sorted(output_names)
    if not loss_terms:
        raise ValueError(
            "SparseAutoencoder needs at least one loss term: `loss_terms` maps "
            f"an output name to a loss. Received: loss_terms={loss_terms!r}")
    losses = {k: _deserialize(v, "loss") for k, v in loss_terms.items()}
    metrics = {k: [_deserialize(m, "metric") for m in v]
               for k, v in (metric_terms or {}).items()}
    for kind, terms in (("loss_terms", losses), ("metric_terms", metrics)):
        unknown = sorted(set(terms) - set(output_names))
        if unknown:
            raise ValueError(
                f"Every key of `{kind}` must name an output {output_names}. "
                f"Received unknown names: {unknown}")
    names = [loss.name for loss in losses.values()] + [
        m.name for ms in metrics.values() for m in ms]
    if len(set(names)) != len(names) or "loss" in names:
        raise ValueError(
            "Loss terms and metrics need distinct names, none of them 'loss'. "
            f"Received names: {names}")
    return losses, metrics


def serialize_terms(losses, metrics):
    """The config entries `loss_terms` and `metric_terms`."""
    return {
        "loss_terms": {k: keras.saving.serialize_keras_object(v)
                       for k, v in losses.items()},
        "metric_terms": {k: [keras.saving.serialize_keras_object(m) for m in v]
                         for k, v in metrics.items()},
    }
