"""`TargetL0`: sparsity you can name. Steers the sparsity coefficient to an L0."""

import math

import keras
from keras import ops

from gated_sae_layers._validation import (
    check_int_at_least, check_positive_float, check_positive_int)
from gated_sae_layers.callbacks import SparsityWarmup, read_sparsity_coefficients


class TargetL0(keras.callbacks.Callback):
    """Steers the sparsity coefficient during `fit` so that L0 reaches `target_l0`.

    Choosing a sparsity coefficient is the hardest knob of every L1-style
    SAE: the L0 it gives depends on the data, its scale, the width and the
    learning rate. This callback takes the L0 you want instead. It is an
    integral controller on the logarithm of the coefficient, with a
    proportional term for damping: after every dispatch of `n` steps whose
    mean L0 (read from the logged `"l0"`) is `l0`,

    ```
    error   = clip(log(l0 / target_l0), -1, 1)
    log c_I = log c_I + integral_gain * n * error
    c       = exp(log c_I + proportional_gain * error)
    ```

    so the coefficient `c` is always positive, grows while L0 is above the
    target and shrinks while it is below, by at most a factor `e` per
    `1 / integral_gain` steps. It acts on every sparsity term of the model
    (`model.sparsity_penalties()`: gated, ReLU, JumpReLU and the weighted
    variants), scaling them together from their values when `fit` starts.
    The coefficient is logged as `sparsity_coefficient` (in `History` and
    in the batch logs). A TopK-family SAE has no sparsity coefficient (`k`
    sets its L0): it is refused.

    With a warm-up (`warmup_steps`, or a `SparsityWarmup` among `fit`'s
    callbacks, whose ramp this callback then takes over) the coefficient
    ramps from 0 to its starting value and the controller starts when the
    ramp ends: the L0 of a half-ramped penalty says nothing about the
    coefficient. The controlled coefficient is left in the model however
    `fit` ends, so a `keras.callbacks.BackupAndRestore` checkpoint and a
    second `fit` call resume from it, and runs of several steps per dispatch
    (the device-resident loop, `steps_per_execution`) are steered once per
    dispatch with the mean L0 of its steps.

    Args:
        target_l0: float > 0, the mean number of active latents per row
            wanted.
        warmup_steps: int >= 0, the length of a linear ramp of the
            coefficient from 0, in optimizer steps (0: none).
        integral_gain: float > 0, how fast the coefficient follows the
            error, per step.
        proportional_gain: float >= 0, the damping term.
        metric: the name of the logged L0 (the kit's `L0` metric logs
            `"l0"`).

    Example:

    ```python
    model = gsl.build_gated_sae(784, 1024, sparsity_coefficient=1.0)
    model.compile(optimizer="adam")
    model.fit(x, epochs=20, callbacks=[gsl.TargetL0(32, warmup_steps=200)])
    model.sparsity_penalties()[0].coefficient   # the coefficient that gives L0 32
    ```
    """

    def __init__(self, target_l0, warmup_steps=0, integral_gain=0.03,
                 proportional_gain=0.5, steps_per_update=8, metric="l0"):
        super().__init__()
        self.target_l0 = check_positive_float(target_l0, "target_l0")
        self.warmup_steps = check_int_at_least(warmup_steps, "warmup_steps", 0)
        self.integral_gain = check_positive_float(integral_gain, "integral_gain")
        if not (isinstance(proportional_gain, (int, float))
                and math.isfinite(proportional_gain) and proportional_gain >= 0):
            raise ValueError(
                "`proportional_gain` must be a finite number >= 0. "
                f"Received: proportional_gain={proportional_gain!r}")
        self.proportional_gain = float(proportional_gain)
        self.steps_per_update = check_positive_int(steps_per_update, "steps_per_update")
        self.metric = metric
        self._warmups = []
        self._reset()

    def _reset(self):
        self._penalties = []      # (loss, coefficient when `fit` set up)
        self._log_integral = None  # log c_I; None until the first batch
        self._error = 0.0
        self._last = (0, 0.0)     # (steps counted this epoch, their running L0)
        self._pending = (0.0, 0)  # (L0 summed over steps, steps) not yet used
        self._at_full = False     # the ramp's end written
        self._scale = 1.0         # the scale last written
        self._batch_step = (0, 0)  # (batch, optimizer step) at the last batch begin
        self._steps_done = 0      # optimizer steps after the last batch

    # ------------------------------------------------ linking with a warm-up
    def link_callbacks(self, callbacks):
        """Called by `SparseAutoencoder.fit` with its callbacks: takes over
        the ramp of any `SparsityWarmup` among them."""
        self._warmups = [c for c in callbacks if isinstance(c, SparsityWarmup)]
        for warmup in self._warmups:
            warmup.controller = self

    def unlink_callbacks(self):
        for warmup in self._warmups:
            warmup.controller = None
        self._warmups = []

    @property
    def ramp_steps(self):
        return max([self.warmup_steps] + [w.steps for w in self._warmups])

    # ------------------------------------------------ the coefficient
    def set_model(self, model):
        super().set_model(model)
        # Read here, before any callback's `on_train_begin` can restore a
        # checkpointed coefficient: the ramp's end point if `fit` starts in it.
        penalties = read_sparsity_coefficients(
            model,
            "TargetL0 steers a sparsity coefficient, and this model has none "
            f"(a model of type {type(model).__name__}"
            f"{', named ' + repr(model.name) if hasattr(model, 'name') else ''}). "
            "A TopK-family SAE sets its L0 with `k`; use TargetL0 with a gated, "
            "ReLU or JumpReLU SAE.")
        self._reset()
        self._penalties = penalties
        for loss, value in self._penalties:
            if not value > 0:
                raise ValueError(
                    "TargetL0 scales the sparsity coefficient, which must start "
                    f"positive. Received: {loss.name} coefficient {value}. Build the "
                    "SAE with a sparsity_coefficient > 0 (e.g. 1.0).")

    def _step(self):
        return int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def _ramp(self, step):
        steps = self.ramp_steps
        return 1.0 if steps == 0 else min(1.0, step / steps)

    def _start(self, step):
        """The first batch of this `fit`: where the controller starts from."""
        loss, start = self._penalties[0]
        if self._ramp(step) >= 1.0:
            # Past any ramp: the variable holds the controlled value (a
            # previous `fit`, or a checkpoint restored in `on_train_begin`).
            current = _value(loss.coefficient)
            if current > 0:
                start = current
        self._log_integral = math.log(start / self._penalties[0][1])

    def coefficient_scale(self, ramp=1.0):
        """The factor applied to the starting coefficients: the controller's,
        capped by the warm-up ramp."""
        if self._log_integral is None:
            return ramp
        scale = math.exp(self._log_integral + self.proportional_gain * self._error)
        return min(ramp, scale) if ramp < 1.0 else scale

    def _write(self, ramp=1.0):
        # On JAX, `Callback.model` puts the trainer's state back into the
        # variables (`jax_state_sync`), so that the loop takes this write.
        self.model  # noqa: B018
        self._scale = self.coefficient_scale(ramp)
        for loss, start in self._penalties:
            loss.coefficient.assign(start * self._scale)

    @property
    def coefficient(self):
        """The value of the first sparsity term's coefficient now."""
        return self._penalties[0][1] * self._scale

    # ------------------------------------------------ Keras hooks
    def needs_every_batch(self):
        """Only while ramping; the controller itself takes any dispatch."""
        return self._log_integral is None or self._ramp(self._steps_done) < 1.0

    @property
    def max_steps_per_dispatch(self):
        """The device-resident loop runs at most this many steps between
        two updates."""
        return self.steps_per_update

    def on_epoch_begin(self, epoch, logs=None):
        self._last = (0, 0.0)

    def on_train_batch_begin(self, batch, logs=None):
        step = self._step()
        self._batch_step = (batch, step)
        if self._log_integral is None:
            self._start(step)
        ramp = self._ramp(step)
        if ramp < 1.0 or not self._at_full:
            self._write(ramp)
            self._at_full = ramp >= 1.0

    def on_train_batch_end(self, batch, logs=None):
        logs = logs if logs is not None else {}
        if self.metric not in logs:
            raise ValueError(
                f"TargetL0 reads the logged `{self.metric}`, which `fit` does not "
                f"log. Logged: {sorted(logs)}. Keep the kit's L0 metric in the "
                "model's `metric_terms`, or pass `metric=` with its name.")
        count, l0 = batch + 1, float(logs[self.metric])
        # Variables may be out of reach here (JAX holds them in its state).
        first_batch, first_step = self._batch_step
        self._steps_done = first_step + batch + 1 - first_batch
        # The logs hold the epoch's running mean: the steps since the last
        # call add `l0 * count - running * seen` active latents per row.
        seen, running = self._last
        self._last = (count, l0)
        total, steps = self._pending
        self._pending = (total + l0 * count - running * seen, steps + count - seen)
        if self._pending[1] >= self.steps_per_update:
            total, steps = self._pending
            self._pending = (0.0, 0)
            self._update(total / steps, steps)
        logs["sparsity_coefficient"] = self.coefficient

    def _update(self, l0, steps):
        """One controller step on the mean L0 of the last `steps` steps."""
        if not math.isfinite(l0):
            return
        ratio = max(l0, self.target_l0 * math.exp(-1.0)) / self.target_l0
        self._error = max(-1.0, min(1.0, math.log(ratio)))
        ramp = self._ramp(self._steps_done)
        if ramp < 1.0:
            # The ramp caps the coefficient: while L0 is above the target
            # the controller rides the cap (no wind-up beyond it), below it
            # the controller takes over from there.
            ceiling = math.log(max(ramp, 1e-12))
            self._log_integral = ceiling if self._error >= 0 else (
                min(self._log_integral, ceiling)
                + self.integral_gain * steps * self._error)
        else:
            self._log_integral += self.integral_gain * steps * self._error
        self._write(ramp)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["sparsity_coefficient"] = self.coefficient

    def on_train_end(self, logs=None):
        self._finish()

    def on_train_error(self, error):
        """Called by `SparseAutoencoder.fit` when it raises."""
        self._finish()

    def _finish(self):
        """Leaves the controlled coefficient in the model, or, if `fit` ends
        during the ramp, the ramp's end point (as `SparsityWarmup` does)."""
        if self._log_integral is None:
            return
        if self._ramp(self._steps_done) < 1.0:
            for loss, start in self._penalties:
                loss.coefficient.assign(start)
        else:
            self._write()


def _value(variable):
    return float(ops.convert_to_numpy(variable))
