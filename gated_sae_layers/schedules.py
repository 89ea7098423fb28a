"""Learning-rate schedules for SAE training."""

import math

import keras
from keras import ops

from gated_sae_layers._validation import check_positive_float


def _check_steps(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return value


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
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
        self.peak_lr = check_positive_float(peak_lr, "peak_lr")
        self.warmup_steps = _check_steps(warmup_steps, "warmup_steps", 0)
        self.total_steps = _check_steps(total_steps, "total_steps", 1)
        if self.total_steps <= self.warmup_steps:
            raise ValueError(
                "`total_steps` must be greater than `warmup_steps`. Received: "
                f"total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
        self.alpha = alpha

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        warmup_lr = self.peak_lr * step / max(warmup, 1.0)
        progress = ops.minimum(
            ops.maximum(step - warmup, 0.0) / float(self.total_steps - warmup), 1.0
        )
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        decay_lr = self.peak_lr * (self.alpha + (1.0 - self.alpha) * cosine)
        return ops.where(step < warmup, warmup_lr, decay_lr)

    def get_config(self):
        return {
            "peak_lr": self.peak_lr,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "alpha": self.alpha,
        }
