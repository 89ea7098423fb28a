"""Dead-latent resampling (Bricken et al. 2023, "Towards Monosemanticity")."""

import keras
import numpy as np
from keras import ops

from gated_sae_layers._keras_compat import optimizer_slots
from gated_sae_layers._validation import check_activations, check_positive_int


def _assign_slice(variable, indices, values, axis):
    array = np.array(ops.convert_to_numpy(variable))
    if axis == 0:
        array[indices] = values
    else:
        array[:, indices] = values
    variable.assign(array)


def _unit_rows(rows):
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-8)


class DeadLatentResampler(keras.callbacks.Callback):
    """Re-initializes dead latents toward badly reconstructed inputs.

    Every `check_every` optimizer steps (until `until_step`), the latents of
    the model are computed on `data` (a sample of training activations). A
    latent that fired on none of it is dead. Each dead latent `i` is
    re-initialized as in Bricken et al. 2023 ("Towards Monosemanticity",
    neuron resampling):

    1. draw an input `x` with probability proportional to its squared
       reconstruction loss `||x - x_hat||^2`;
    2. decoder row `W_dec[i] = (x - b_dec) / ||x - b_dec||`;
    3. encoder column `W[:, i] = 0.2 * mean alive column norm * W_dec[i]`
       (`W` is the encoder's `input_kernel`), and the latent's other
       per-latent weights to their reset values (the encoder's
       `latent_parameters()`: biases and `r_mag` to 0, a JumpReLU
       threshold to its initial value, a dead-latent counter to 0);
    4. the optimizer's state for those rows and columns (Adam's moments)
       to 0.

    A transcoder (`build_transcoder`) needs `targets=`, the `y` of the rows
    of `data`: step 1 draws by `||y - y_hat||^2`, step 2 sets the decoder row
    to `(y - b_dec) / ||y - b_dec||` and step 3 the encoder column along
    `x / ||x||` (the encoder reads `x` uncentered).

    Works with every encoder of the kit (any `SparseEncoder`), on every
    backend. `resampled` holds `(step, number of latents resampled)` for
    each check.

    Args:
        data: `(num_examples, input_dim)` float activations to judge
            deadness and draw replacements from.
        check_every: int, steps between checks.
        until_step: int or None, no checks after this step (resampling late
            in training disturbs convergence).
        batch_size: rows encoded at a time.
        seed: seed of the replacement draws.
        targets: `None`, or for a transcoder `(num_examples, output_dim)`,
            the targets of the rows of `data`.

    Example:

    ```python
    resampler = gsl.DeadLatentResampler(x_train[:4096], check_every=500)
    model.fit(x_train, epochs=20, callbacks=[resampler])
    resampler.resampled   # [(500, 37), (1000, 4), ...]
    ```
    """

    def __init__(self, data, check_every, until_step=None, batch_size=1024, seed=0,
                 targets=None):
        super().__init__()
        self.data = np.asarray(check_activations(data, None, "data"), "float32")
        self.targets = None
        if targets is not None:
            self.targets = np.asarray(check_activations(targets, None, "targets"),
                                      "float32")
            if len(self.targets) != len(self.data):
                raise ValueError(
                    "`targets` must have one row per row of `data`. Received: "
                    f"{len(self.targets)} target rows for {len(self.data)} data rows")
        self.check_every = check_positive_int(check_every, "check_every")
        self.until_step = None if until_step is None else check_positive_int(
            until_step, "until_step")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.rng = np.random.default_rng(seed)
        self.resampled = []

    def on_train_batch_end(self, batch, logs=None):
        model = self.model
        step = int(ops.convert_to_numpy(model.optimizer.iterations))
        if step % self.check_every or (self.until_step and step > self.until_step):
            return
        self.resampled.append((step, self.resample(model)))

    def _targets(self, model):
        if model.is_transcoder and self.targets is None:
            raise ValueError(
                f"Model '{model.name}' is a transcoder: `DeadLatentResampler` needs "
                "the targets of its data rows, `DeadLatentResampler(data, ..., "
                "targets=y)`. Received: targets=None")
        return self.data if self.targets is None else self.targets

    def resample(self, model):
        """Resamples the dead latents of `model` now; returns how many."""
        targets = self._targets(model)
        latents, losses = [], []
        for start in range(0, len(self.data), self.batch_size):
            batch = self.data[start:start + self.batch_size]
            out = model.predict_on_batch(batch)
            latents.append(np.asarray(out["latents"]).max(axis=0))
            losses.append(((targets[start:start + self.batch_size]
                            - np.asarray(out["reconstruction"])) ** 2).sum(-1))
        dead = np.flatnonzero(np.max(latents, axis=0) <= 0)
        if dead.size == 0:
            return 0
        losses = np.concatenate(losses).astype("float64") ** 2
        probabilities = losses / losses.sum() if losses.sum() > 0 else None
        chosen = self.rng.choice(len(self.data), size=dead.size, p=probabilities)
        decoder, encoder = model.decoder, model.encoder
        centered = targets[chosen] - np.asarray(ops.convert_to_numpy(decoder.bias))
        directions = _unit_rows(centered)
        encoder_directions = (_unit_rows(self.data[chosen]) if model.is_transcoder
                              else directions)

        kernel, vectors = encoder.input_kernel, encoder.latent_parameters()
        columns = np.asarray(ops.convert_to_numpy(kernel))
        alive = np.setdiff1d(np.arange(columns.shape[1]), dead)
        scale = 0.2 * (np.linalg.norm(columns[:, alive], axis=0).mean()
                       if alive.size else 1.0)
        _assign_slice(decoder.kernel, dead, directions, axis=0)
        _assign_slice(kernel, dead, (scale * encoder_directions).T, axis=1)
        for vector, value in vectors:
            _assign_slice(vector, dead, value, axis=0)

        optimizer = model.optimizer
        for variable, axis in [(decoder.kernel, 0), (kernel, 1)] + [
                (v, 0) for v, _ in vectors]:
            for slot in optimizer_slots(optimizer, variable):
                _assign_slice(slot, dead, 0.0, axis=axis)
        return int(dead.size)
