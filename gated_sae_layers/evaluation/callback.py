"""`SplicedEvaluation`: the downstream cost of the SAE, measured while it trains."""

import keras

from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.evaluation.spliced import OUTPUTS, spliced_metrics
from gated_sae_layers.evaluation.tensorboard import (
    check_log_dir, create_writer, write_metrics)


class SplicedEvaluation(keras.callbacks.Callback):
    """Runs `spliced_metrics` with the SAE being trained every `every_n_steps` steps.

    Steps are the SAE's training batches counted from the first `fit` this
    callback joins, across epochs and later `fit` calls. The evaluation
    runs at the end of the first batch at or after each multiple of
    `every_n_steps`: exactly on it in Keras's own loop, and at the end of
    the dispatch that crosses it in the kit's device-resident JAX loop,
    which runs several steps per dispatch (`coarse_batch_hooks`; this
    callback does not make it dispatch step by step). `history` records
    the step actually evaluated.

    Between evaluations a batch costs one integer comparison: the callback
    touches no model state, so on JAX it does not force the training state
    back into the variables (reading `self.model` does, when it evaluates).
    It runs in the main thread (not `async_safe`): the evaluation reads the
    SAE's weights and calls the host model, which must not race the
    training step.

    Args:
        every_n_steps: int, the evaluation period in training steps.
        model: the host Keras model the SAE reads from (not the SAE).
        layer: the name (or path) of the layer of `model` whose output the
            SAE reconstructs (for a transcoder: the MLP block's output,
            which its prediction replaces).
        inputs: the host model's inputs to evaluate on (keep them small:
            each evaluation runs `model` five times over them).
        loss_fn: `loss_fn(outputs, clean_outputs, targets)` -> `(batch,)`.
        targets: optional targets batched with `inputs`.
        outputs: `"logits"`, `"probabilities"` or `None` (see
            `spliced_metrics`).
        batch_size: int, examples per forward pass.
        log_dir: optional TensorBoard folder; each evaluation is written
            there at its step under `spliced/`.
        input_layer: for a transcoder, the layer whose output it reads
            (the MLP block's input; see `spliced_metrics`).

    Attributes:
        history: list of `(step, metrics dict)`, one per evaluation.
        step: the training steps seen so far.

    Example (run in `tests/test_evaluation.py`; a `fit` is too slow for a doctest):

    ```python
    evaluation = SplicedEvaluation(
        500, model=classifier, layer="hidden", inputs=x_eval, targets=y_eval,
        loss_fn=lambda out, clean, y: keras.losses.sparse_categorical_crossentropy(
            y, out, from_logits=True),
        log_dir="logs/")
    sae.fit(activations, epochs=10, callbacks=[evaluation])
    evaluation.history  # [(500, {"loss_clean": ..., "kl_divergence": ...}), ...]
    ```
    """

    # For the kit's device-resident loop: end-of-dispatch calls suffice.
    coarse_batch_hooks = True

    def __init__(self, every_n_steps, model, layer, inputs, loss_fn, targets=None,
                 outputs="logits", batch_size=64, log_dir=None, input_layer=None):
        super().__init__()
        self.every_n_steps = check_positive_int(every_n_steps, "every_n_steps")
        if not isinstance(model, keras.Model):
            raise TypeError("`model` must be the host keras.Model the SAE reads from. "
                            f"Received: model={model!r:.100}")
        if not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be callable. Received: loss_fn={loss_fn!r}")
        if outputs not in OUTPUTS:
            raise ValueError(
                f"`outputs` must be one of {OUTPUTS}. Received: outputs={outputs!r}")
        self.host_model, self.layer, self.inputs = model, layer, inputs
        self.input_layer = input_layer
        self.loss_fn, self.targets, self.outputs = loss_fn, targets, outputs
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if log_dir is not None:
            check_log_dir(log_dir)
        self.log_dir = log_dir
        self.history = []
        self.step = 0
        self._epoch_start = 0  # `step` when the current epoch began
        self._writer = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.step

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last batch index done in this epoch (0-based).
        previous, self.step = self.step, self._epoch_start + batch + 1
        if self.step // self.every_n_steps > previous // self.every_n_steps:
            self.evaluate()

    def evaluate(self):
        """Runs `spliced_metrics` now; records and returns the dict."""
        metrics = spliced_metrics(
            self.host_model, self.layer, self.model, self.inputs, self.loss_fn,
            targets=self.targets, batch_size=self.batch_size, outputs=self.outputs,
            input_layer=self.input_layer)
        self.history.append((self.step, metrics))
        if self.log_dir is not None:
            if self._writer is None:
                self._writer = create_writer(self.log_dir)
            write_metrics(metrics, self._writer, self.step, prefix="spliced")
        return metrics
