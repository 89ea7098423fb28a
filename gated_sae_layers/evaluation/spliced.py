"""What an SAE costs the model it reads from: downstream loss and KL, spliced in."""

import keras
import numpy as np
from keras import ops

from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.activations import rows as activation_rows
from gated_sae_layers.activations.splice import splice_places, spliced

OUTPUTS = ("logits", "probabilities", None)
# Probabilities below the smallest normal float32 count as that value: a
# float32 softmax cannot tell them apart from 0, and log(0) is -inf.
PROBABILITY_FLOOR = float(np.finfo("float32").tiny)


def kl_divergence(clean, other, outputs="logits"):
    """`KL(p_clean || p_other)` per distribution over the last axis, in float64.

    ```
    KL = sum_c p_clean[c] * (log p_clean[c] - log p_other[c])
    ```

    From logits, `log p = z - logsumexp(z)`; from probabilities, `log p =
    log(max(p, PROBABILITY_FLOOR))` (no renormalization), with the term 0
    wherever `p_clean` is 0.

    Args:
        clean: `(..., classes)` outputs of the unmodified model.
        other: `(..., classes)` outputs with the layer replaced.
        outputs: `"logits"` or `"probabilities"`: what the arrays hold.

    Returns:
        A float64 array of shape `clean.shape[:-1]`, each value >= 0 (up to
        round-off).

    Example:

    >>> import numpy as np
    >>> clean = np.log(np.array([[0.5, 0.5]]))
    >>> np.round(kl_divergence(clean, np.log(np.array([[0.9, 0.1]]))), 4).tolist()
    [0.5108]
    """
    if outputs not in ("logits", "probabilities"):
        raise ValueError("`outputs` must be 'logits' or 'probabilities'. "
                         f"Received: outputs={outputs!r}")
    clean = np.asarray(ops.convert_to_numpy(clean), "float64")
    other = np.asarray(ops.convert_to_numpy(other), "float64")
    if clean.shape != other.shape or clean.ndim == 0:
        raise ValueError("`clean` and `other` must have the same shape (..., classes). "
                         f"Received: {clean.shape} and {other.shape}")
    if outputs == "logits":
        def log_p(z):
            top = z.max(axis=-1, keepdims=True)
            return z - top - np.log(np.exp(z - top).sum(axis=-1, keepdims=True))
        log_clean, log_other = log_p(clean), log_p(other)
        p_clean = np.exp(log_clean)
    else:
        p_clean = clean
        log_clean = np.log(np.maximum(clean, PROBABILITY_FLOOR))
        log_other = np.log(np.maximum(other, PROBABILITY_FLOOR))
    terms = np.where(p_clean > 0, p_clean * (log_clean - log_other), 0.0)
    return terms.sum(axis=-1)


class _RowMean:
    """An SAE stand-in for `spliced`: passes rows through and averages them
    (`spliced` checks their width against `output_dim`)."""

    def __init__(self, output_dim):
        self.output_dim, self.total, self.count = output_dim, None, 0

    def __call__(self, rows, training=False):
        values = np.asarray(ops.convert_to_numpy(rows), "float64")
        self.total = values.sum(axis=0) + (0.0 if self.total is None else self.total)
        self.count += len(values)
        return {"reconstruction": rows}


class _ConstantRows:
    """An SAE stand-in for `spliced`: every row becomes `value` (mean ablation)."""

    def __init__(self, value):
        self.value = value

    def __call__(self, rows, training=False):
        value = ops.convert_to_tensor(self.value, dtype=rows.dtype)
        return {"reconstruction": ops.broadcast_to(value, ops.shape(rows))}


def _losses(loss_fn, outputs, clean, targets, count):
    losses = np.asarray(ops.convert_to_numpy(loss_fn(outputs, clean, targets)),
                        "float64").reshape(-1)
    if losses.size != count:
        raise ValueError(
            "`loss_fn(outputs, clean_outputs, targets)` must return one loss per "
            f"example, shape ({count},). Received: {losses.size} values")
    return losses


def _ratio(ablated, sae, clean):
    gap = ablated - clean
    return (ablated - sae) / gap if gap else float("nan")


def check_spliced_arguments(model, layer, inputs, loss_fn, targets=None, batch_size=64,
                            outputs="logits", input_layer=None, sae=None):
    """Checks `spliced_metrics`'s arguments with no forward pass (the places
    against `sae` where it is given); returns `(batch_size, count)`.
    `evaluate_sae` calls it before its first pass over the rows."""
    if not isinstance(model, keras.Model):
        raise TypeError("`model` must be a keras.Model (the host model the SAE reads "
                        f"from). Received: model={model!r:.100}")
    if not callable(loss_fn):
        raise TypeError(
            "`loss_fn` must be callable: loss_fn(outputs, clean_outputs, targets) -> "
            f"(batch,) losses. Received: loss_fn={loss_fn!r:.100} of type "
            f"{type(loss_fn).__name__}")
    if outputs not in OUTPUTS:
        raise ValueError(f"`outputs` must be one of {OUTPUTS}. Received: outputs={outputs!r}")
    batch_size = check_positive_int(batch_size, "batch_size")
    count = activation_rows.num_examples(inputs, "inputs")
    if targets is not None and activation_rows.num_examples(targets, "targets") != count:
        raise ValueError(
            f"`targets` must have one entry per example of `inputs` ({count}). "
            f"Received: {activation_rows.num_examples(targets, 'targets')} targets")
    splice_places(model, layer, sae, input_layer)  # finds the layers, or says what is wrong
    return batch_size, count


def spliced_metrics(model, layer, sae, inputs, loss_fn, targets=None, batch_size=64,
                    outputs="logits", input_layer=None):
    """The downstream cost of replacing `layer`'s output in `model` by the SAE's.

    Runs `model` on `inputs` four ways (`activations.splice.spliced`):
    clean; with the layer's output replaced by the SAE's reconstruction;
    by zeros (zero ablation); and by the mean of the layer's output over
    all rows of `inputs` (mean ablation; for a sequence model that is over
    every position, padding included). With `L` the mean over examples of
    `loss_fn(outputs, clean_outputs, targets)`:

    ```
    loss_recovered_<ablation> = (L_ablation - L_spliced) / (L_ablation - L_clean)
    kl_divergence             = mean over distributions of KL(p_clean || p_spliced)
    ```

    1 is a free SAE, 0 one as bad as the ablation (NaN when the ablation
    costs nothing). SAEBench reports the zero-ablation ratio as "CE loss
    score"; the mean ablation is a stricter baseline. The KL is taken over
    the last axis of the model's output (`outputs`), averaged over every
    leading position (example, token).

    A transcoder (`build_transcoder`) is spliced in place of an MLP block:
    `layer` is the block's output, which its prediction replaces, and
    `input_layer` the block's input, which it reads in the same forward
    pass (`spliced`). The ablations are those of the block's output: zeros,
    and its mean over all rows of `inputs`.

    Args:
        model: any Keras model (Functional, Sequential, subclassed, keras_hub).
        layer: the name, path (`"outer/inner"`) or object of the layer whose
            output is replaced.
        sae: a `SparseAutoencoder` over that layer's width (rows of the
            output's last axis go through it), or a transcoder reading
            `input_layer` and predicting `layer`'s output.
        inputs: the model's inputs (array, or dict of arrays) of `N` examples.
        loss_fn: `loss_fn(outputs, clean_outputs, batch_targets)` returning
            `(batch,)` losses, as for `activations.loss_recovered`.
        targets: optional array of `N` targets, batched alongside `inputs`.
        batch_size: int, examples per forward pass.
        outputs: `"logits"`, `"probabilities"` (what the model returns, for
            the KL), or `None` to skip the KL (dict outputs, embeddings).
        input_layer: for a transcoder, the layer (name, path or object)
            whose output it reads; refused for an SAE.

    Returns:
        A dict of floats: `loss_clean`, `loss_spliced`, `loss_zero_ablation`,
        `loss_mean_ablation`, `loss_recovered_zero_ablation`,
        `loss_recovered_mean_ablation`, and unless `outputs=None`,
        `kl_divergence`, `kl_divergence_zero_ablation`,
        `kl_divergence_mean_ablation`.

    Example:

    >>> import keras, numpy as np
    >>> import gated_sae_layers as gsl
    >>> x = keras.Input((4,))
    >>> hidden = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    >>> net = keras.Model(x, keras.layers.Dense(3)(hidden))
    >>> inputs = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> metrics = spliced_metrics(
    ...     net, "hidden", gsl.build_sae("topk", 8, 16, k=2), inputs,
    ...     lambda out, clean, y: keras.losses.mean_squared_error(clean, out))
    >>> metrics["loss_clean"], metrics["kl_divergence"] >= 0
    (0.0, True)
    """
    batch_size, count = check_spliced_arguments(model, layer, inputs, loss_fn, targets,
                                                batch_size, outputs, input_layer, sae)
    layer, input_layer = splice_places(model, layer, sae, input_layer)  # resolved once
    mean = _RowMean(sae.output_dim)
    for batch in activation_rows.example_batches(inputs, batch_size):
        with spliced(model, layer, mean, "sae"):
            model(batch, training=False)
    if not mean.count:
        raise ValueError(f"Layer '{layer.name}' was not called by model '{model.name}' on "
                         "`inputs`: there is no output to replace.")
    mean_rows = _ConstantRows((mean.total / mean.count).astype("float32"))

    replacements = {"spliced": (sae, "sae"), "zero_ablation": (None, "zero"),
                    "mean_ablation": (mean_rows, "sae")}
    losses = dict.fromkeys(["clean", *replacements], 0.0)
    divergences = dict.fromkeys(replacements, 0.0)
    distributions = 0
    target_batches = (activation_rows.example_batches(targets, batch_size, "targets")
                      if targets is not None else None)
    for batch in activation_rows.example_batches(inputs, batch_size):
        batch_targets = next(target_batches) if target_batches is not None else None
        clean = model(batch, training=False)
        examples = activation_rows.num_examples(batch)
        losses["clean"] += _losses(loss_fn, clean, clean, batch_targets, examples).sum()
        if outputs is not None:
            if not hasattr(clean, "shape"):
                raise ValueError(
                    "The KL needs a model with one output tensor `(..., classes)`. "
                    f"Received: outputs of type {type(clean).__name__}. Pass "
                    "`outputs=None` to skip the KL.")
            distributions += int(np.prod(tuple(clean.shape)[:-1]))
        for name, (replacement, mode) in replacements.items():
            reads = input_layer if replacement is sae else None
            with spliced(model, layer, replacement, mode, input_layer=reads):
                out = model(batch, training=False)
            losses[name] += _losses(loss_fn, out, clean, batch_targets, examples).sum()
            if outputs is not None:
                divergences[name] += float(kl_divergence(clean, out, outputs).sum())

    result = {f"loss_{name}": float(total / count) for name, total in losses.items()}
    for ablation in ("zero_ablation", "mean_ablation"):
        result[f"loss_recovered_{ablation}"] = _ratio(
            result[f"loss_{ablation}"], result["loss_spliced"], result["loss_clean"])
    if outputs is not None:
        result["kl_divergence"] = divergences["spliced"] / distributions
        for ablation in ("zero_ablation", "mean_ablation"):
            result[f"kl_divergence_{ablation}"] = divergences[ablation] / distributions
    return result
