"""The slots per row of a data-dependent encoder: measured at `fit`'s start, adapted each epoch.

A gated, ReLU or JumpReLU encoder activates a varying number of latents per
row; the sparse step gives each row `cap` slots and falls back to the dense
step for a batch where some row needs more. The cap is static (it shapes
the compiled step), so it is chosen from the data: at the start of `fit`
from the largest support of a row in a sample of the training rows
(`calibrate`), then at the end of every epoch from the logged
`max_active_latents` and `sparse_fallbacks` (`SparseCapTuner`). A new cap
rebuilds the compiled step once (a few seconds); the tuner raises the cap
only when steps fell back and lowers it only when the support fits in half
of it, so that happens rarely.
"""

import math

import keras
import numpy as np

from gated_sae_layers.activations.store import ActivationStore
from gated_sae_layers.models.sparse_path import graph

HEADROOM = 1.25
"""The cap leaves this factor above the largest support it was measured on."""
MIN_CAP = 8
CAP_STEP = 16
SAMPLE_ROWS = 4096
FALLBACK_SHARE = 0.02
"""An epoch in which more than this share of the steps fell back raises the cap."""


def suggested_cap(largest_support, latent_dim):
    """The multiple of `CAP_STEP` at least `HEADROOM` above `largest_support`.

    At most `latent_dim`, at least `MIN_CAP`. The step's loops stop at the
    largest support of each batch, so unused slots cost little (their
    share of the support extraction and of the slot-shaped tensors); the
    headroom keeps fallbacks rare and the tuner's hysteresis (raise on
    fallbacks, lower at half) keeps recompiles rare.

    Example:

    >>> suggested_cap(5, 4096), suggested_cap(25, 4096), suggested_cap(88, 4096)
    (8, 32, 112)
    """
    wanted = max(MIN_CAP, math.ceil(max(1, largest_support) * HEADROOM))
    if wanted > CAP_STEP:
        wanted = CAP_STEP * math.ceil(wanted / CAP_STEP)
    return min(latent_dim, wanted)


def _sample(x, rows):
    """Up to `rows` rows of `x` (an array or an `ActivationStore`), or `None`."""
    if isinstance(x, ActivationStore):
        if not x.num_shards:
            return None
        return np.asarray(x.read_shard(0)[:rows], "float32")
    if hasattr(x, "shape") and len(getattr(x, "shape", ())) == 2:
        return np.asarray(x[:rows], "float32")
    return None


def calibrate(model, x, batch_size):
    """Sets an adaptive plan's cap from the largest support in a sample of `x`.

    Does nothing for a fixed cap, a TopK encoder, a plan already calibrated
    (a later `fit` keeps the adapted cap) or data with no sample to take (a
    dataset or generator: the epoch-end tuning then adapts the cap).
    """
    plan = model.sparse_plan
    if plan is None or plan.fixed or plan.calibrated:
        return
    sample = _sample(x, max(SAMPLE_ROWS, batch_size))
    if sample is None or not len(sample):
        return
    largest = 0
    for start in range(0, len(sample), batch_size):
        selection = graph.select(model, sample[start:start + batch_size], 1)
        largest = max(largest, int(keras.ops.convert_to_numpy(
            selection.largest_support())))
    plan.set_cap(suggested_cap(largest, plan.encoder.latent_dim))
    rebuild_step(model)


def rebuild_step(model):
    """Makes the next training step compile anew (after the cap changed)."""
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


class SparseCapTuner(keras.callbacks.Callback):
    """Adapts the sparse step's cap at the end of each epoch (`fit` adds it).

    Raises the cap when more than `FALLBACK_SHARE` of the epoch's steps
    fell back to the dense step; lowers it when the largest support of the
    epoch would fit in half of it. Either way the new cap is
    `suggested_cap(max_active_latents)`.
    """

    coarse_batch_hooks = True

    def __init__(self):
        super().__init__()
        self.changes = []

    def on_epoch_end(self, epoch, logs=None):
        plan = self.model.sparse_plan
        logs = logs or {}
        if plan is None or "max_active_latents" not in logs:
            return
        steps = (self.params or {}).get("steps") or 1
        largest = float(logs["max_active_latents"])
        share = float(logs["sparse_fallbacks"]) / steps
        new = suggested_cap(largest, plan.encoder.latent_dim)
        current = plan.encoder.latent_dim if plan.cap == 0 else plan.cap
        if plan.cap_for(new) != plan.cap and (
                (share > FALLBACK_SHARE and new > current) or new * 2 <= current):
            self.changes.append((epoch, plan.cap, plan.cap_for(new)))
            plan.set_cap(new)
            rebuild_step(self.model)
