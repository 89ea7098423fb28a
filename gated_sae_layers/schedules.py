"""Learning-rate schedules for SAE training."""

import math

import keras
from keras import ops

from gated_sae_layers._validation import (
    check_int_at_least, check_positive_float, check_real)


def _check_warmup(peak_lr, warmup_steps, total_steps):
    """`(peak_lr, warmup_steps, total_steps)` checked: a positive lr and
    `0 <= warmup_steps < total_steps`, integers."""
    peak_lr = check_positive_float(peak_lr, "peak_lr")
    warmup_steps = check_int_at_least(warmup_steps, "warmup_steps", 0)
    total_steps = check_int_at_least(total_steps, "total_steps", 1)
    if total_steps <= warmup_steps:
        raise ValueError(
            "`total_steps` must be greater than `warmup_steps`. Received: "
            f"total_steps={total_steps}, warmup_steps={warmup_steps}"
        )
    return peak_lr, warmup_steps, total_steps


def _check_fraction(value, name):
    value = check_real(value, name, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={value}")
    return value


class _LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warm-up from 0 to `peak_lr`, then what a subclass gives.

    ```
    lr(step) = peak_lr * step / warmup_steps     step < warmup_steps
    lr(step) = self._after_warmup(step)           otherwise
    ```

    Subclasses implement `_after_warmup(step)` (`step` a float32 tensor)
    and `_schedule_config()`, their `get_config` keys after `peak_lr`,
    `warmup_steps` and `total_steps`.

    Args:
        peak_lr: float > 0, the learning rate at the end of the warm-up.
        warmup_steps: int >= 0, the number of warm-up steps.
        total_steps: int > warmup_steps, the step at which the schedule ends.
    """

    def __init__(self, peak_lr, warmup_steps, total_steps):
        self.peak_lr, self.warmup_steps, self.total_steps = _check_warmup(
            peak_lr, warmup_steps, total_steps)

    def _after_warmup(self, step):
        raise NotImplementedError

    def _schedule_config(self):
        raise NotImplementedError

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        warmup_lr = self.peak_lr * step / max(warmup, 1.0)
        return ops.where(step < warmup, warmup_lr, self._after_warmup(step))

    def get_config(self):
        return {
            "peak_lr": self.peak_lr,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            **self._schedule_config(),
        }


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class WarmupCosineDecay(_LinearWarmup):
    """Linear warm-up to `peak_lr`, then cosine decay to `alpha * peak_lr`.

    ```
    lr(step) = peak_lr * step / warmup_steps                     step < warmup_steps
    lr(step) = peak_lr * (alpha + (1 - alpha) * 0.5 * (1 + cos(pi * p)))  otherwise
    p = min(1, (step - warmup_steps) / (total_steps - warmup_steps))
    ```

    The learning rate is `peak_lr` exactly at `step == warmup_steps` and
    `alpha * peak_lr` from `total_steps` on. A warm-up matters with
    `Adam(beta_1=0)`, the optimizer setting of the gated SAE paper.

    Args:
        peak_lr: float > 0, the learning rate at the end of the warm-up.
        warmup_steps: int >= 0, the number of warm-up steps.
        total_steps: int > warmup_steps, the step at which decay ends.
        alpha: float in [0, 1], the final learning rate as a fraction of
            `peak_lr`. Default 0.0 (decay to zero, as `gated-sae-tf`).

    Example:

    >>> schedule = WarmupCosineDecay(1e-3, warmup_steps=10, total_steps=110)
    >>> [round(float(schedule(s)), 6) for s in (0, 5, 10, 60, 110, 500)]
    [0.0, 0.0005, 0.001, 0.0005, 0.0, 0.0]
    """

    def __init__(self, peak_lr, warmup_steps, total_steps, alpha=0.0):
        super().__init__(peak_lr, warmup_steps, total_steps)
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
        self.alpha = alpha

    def _after_warmup(self, step):
        warmup = float(self.warmup_steps)
        progress = ops.minimum(
            ops.maximum(step - warmup, 0.0) / float(self.total_steps - warmup), 1.0
        )
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        return self.peak_lr * (self.alpha + (1.0 - self.alpha) * cosine)

    def _schedule_config(self):
        return {"alpha": self.alpha}


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class WarmupStableDecay(_LinearWarmup):
    """Linear warm-up, constant `peak_lr`, then a short linear decay at the end.

    The warmup-stable-decay ("WSD", trapezoidal) schedule of Hu et al. 2024
    (MiniCPM, arXiv:2404.06395) and Hägele et al. 2024 (arXiv:2405.18392):

    ```
    decay_steps = round(decay_fraction * total_steps)
    decay_start = total_steps - decay_steps
    lr(step) = peak_lr * step / warmup_steps                 step < warmup_steps
    lr(step) = peak_lr                                       step < decay_start
    lr(step) = peak_lr * (1 - (1 - final_lr_fraction) * p)   otherwise
    p = min(1, (step - decay_start) / decay_steps)
    ```

    With `decay_fraction=0` there is no decay: constant `peak_lr` after the
    warm-up (as `dictionary_learning`'s trainers without `decay_start`).

    Why not `WarmupCosineDecay` for SAEs: a cosine to zero spends half the
    run below half the peak rate, and SAE dictionaries are still being found
    late in training (rare features, on a short budget). Holding the peak
    and decaying only at the end trains at the peak rate for most of the
    run and still ends at a low rate, which tightens the final weights (the
    decay phase buys most of the loss drop of a cosine schedule, Hägele et
    al. 2024). The decay is linear, as `dictionary_learning`'s `decay_start`
    (its demo decays over the last 20%); Hägele et al. found linear close to
    their best cool-down shape (1 - sqrt) and a 20% cool-down enough to match
    cosine.

    Args:
        peak_lr: float > 0, the learning rate after the warm-up.
        warmup_steps: int >= 0, the number of warm-up steps.
        total_steps: int > warmup_steps, the step at which decay ends.
        decay_fraction: float in [0, 1), the decay's length as a fraction of
            `total_steps`; the decay must start at or after the warm-up's
            end. Default 0.2.
        final_lr_fraction: float in [0, 1], the final learning rate as a
            fraction of `peak_lr`. Default 0.0 (decay to zero).

    Example:

    >>> schedule = WarmupStableDecay(1e-3, warmup_steps=10, total_steps=110)
    >>> [round(float(schedule(s)), 6) for s in (0, 5, 10, 50, 88, 99, 110, 500)]
    [0.0, 0.0005, 0.001, 0.001, 0.001, 0.0005, 0.0, 0.0]
    """

    def __init__(self, peak_lr, warmup_steps, total_steps, decay_fraction=0.2,
                 final_lr_fraction=0.0):
        super().__init__(peak_lr, warmup_steps, total_steps)
        decay_fraction = _check_fraction(decay_fraction, "decay_fraction")
        if decay_fraction == 1.0:
            raise ValueError(
                "`decay_fraction` must be in [0, 1). Received: decay_fraction=1.0")
        if self._decay_steps(decay_fraction) > self.total_steps - self.warmup_steps:
            raise ValueError(
                "`decay_fraction` makes the decay start before the warm-up ends: "
                "it must be at most (total_steps - warmup_steps) / total_steps = "
                f"{(self.total_steps - self.warmup_steps) / self.total_steps:.4g}. "
                f"Received: decay_fraction={decay_fraction}, "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.decay_fraction = decay_fraction
        self.final_lr_fraction = _check_fraction(final_lr_fraction, "final_lr_fraction")

    def _decay_steps(self, decay_fraction):
        return int(round(decay_fraction * self.total_steps))

    def _after_warmup(self, step):
        decay_steps = self._decay_steps(self.decay_fraction)
        if decay_steps == 0:
            return self.peak_lr
        decay_start = float(self.total_steps - decay_steps)
        progress = ops.clip((step - decay_start) / float(decay_steps), 0.0, 1.0)
        return self.peak_lr * (1.0 - (1.0 - self.final_lr_fraction) * progress)

    def _schedule_config(self):
        return {"decay_fraction": self.decay_fraction,
                "final_lr_fraction": self.final_lr_fraction}
