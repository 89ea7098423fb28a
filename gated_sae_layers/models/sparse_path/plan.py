"""`compile(sparse=...)`: whether a model trains on the sparse path, and with how many slots.

`resolve` turns the option into a `SparsePlan` (or `None`, dense, with the
reason). `"auto"`, the default, takes the sparse path where it was measured
faster (`benchmarks/RESULTS.md`, "The sparse training path"): on a CPU,
with the JAX backend or TensorFlow with `jit_compile=True`, for a
dictionary of at least `AUTO_MIN_LATENTS` latents (`AUTO_MIN_LATENTS_ADAPTIVE`
for the encoders whose number of active latents varies). On a GPU or TPU `"auto"`
keeps the dense step until a measurement there says otherwise.
"""

import keras
from keras import ops

from gated_sae_layers import distribution
from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.models.sparse_path import graph
from gated_sae_layers.sparse import host

OPTIONS = ("auto", True, False)
KERNEL_OPTIONS = ("auto", "numba", "xla")
AUTO_MIN_LATENTS = 1024
"""`sparse="auto"` trains smaller TopK-style dictionaries densely (where the dense
matmuls are cheap, the per-slot loops of the sparse step cost more than they
save; at 1024 latents, k=32, batch 256 the sparse step was 2.2x the dense)."""
AUTO_MIN_LATENTS_ADAPTIVE = 2048
"""... and smaller gated, ReLU, JumpReLU and BatchTopK dictionaries: their
sparse step gains less (1.3x at 1,024 latents and L0 1%) and runs a dense
phase, which costs one more matmul a step, while many latents fire."""
AUTO_MAX_SLOT_FRACTION = 1 / 8
"""... and TopK-style encoders whose `k` exceeds this fraction of the latents."""
DENSE_PHASE_FRACTION = 1 / 32
"""An adaptive cap above this fraction of the latents means a dense phase
(`SparsePlan.set_cap`): a gated SAE at 4,096 latents broke even near 256
slots per row on a CPU and was 1.9x faster than dense at L0 41 (cap 96)."""
ROW_BLOCKS = 4
"""Blocks of rows of a data-dependent encoder's sparse step: the batch is
ordered by support size and each block's loops end at its own largest
support (`Selection.by_support_size`), so they pay about for the mean row
rather than the busiest one (`benchmarks/RESULTS.md`)."""
DEFAULT_CAP = 64
"""Slots per row of a data-dependent encoder before `fit` measures its support."""


def check_option(sparse, sparse_cap, sparse_kernels="auto"):
    """Validates `compile(sparse=..., sparse_cap=..., sparse_kernels=...)`."""
    if not any(sparse is option for option in OPTIONS) and sparse != "auto":
        raise ValueError(
            f"`sparse` must be 'auto', True or False. Received: sparse={sparse!r}")
    if sparse_cap is not None:
        sparse_cap = check_positive_int(sparse_cap, "sparse_cap")
    if not isinstance(sparse_kernels, str) or sparse_kernels not in KERNEL_OPTIONS:
        raise ValueError(
            "`sparse_kernels` must be 'auto', 'numba' or 'xla'. Received: "
            f"sparse_kernels={sparse_kernels!r}")
    return sparse, sparse_cap, sparse_kernels


class SparsePathStats(keras.metrics.Metric):
    """What the sparse step did this epoch: fallbacks and the largest row support.

    Logged as `sparse_fallbacks` (steps that fell back to the dense step
    because a row had more active latents than slots) and
    `max_active_latents` (the largest number of active latents of one row),
    for the encoders whose number of active latents varies.
    """

    def __init__(self, name="sparse_path", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.fallback_steps = self.add_variable(
            shape=(), initializer="zeros", name="fallback_steps")
        self.largest_support = self.add_variable(
            shape=(), initializer="zeros", name="largest_support")

    def update_state(self, fallback, largest_support):
        self.fallback_steps.assign_add(ops.cast(fallback, self.dtype))
        self.largest_support.assign(ops.maximum(
            self.largest_support.value, ops.cast(largest_support, self.dtype)))

    def result(self):
        return {"sparse_fallbacks": self.fallback_steps.value,
                "max_active_latents": self.largest_support.value}


class SparsePlan:
    """How a model trains on the sparse path.

    Args:
        model: the `SparseAutoencoder`.
        cap: int or `None`; the slots per row of an encoder whose number of
            active latents varies (`None`: `DEFAULT_CAP` until `fit`
            measures the support on the data, then adapted every epoch).
    """

    def __init__(self, model, cap):
        self.encoder = model.encoder
        self.cap_is_auto = cap is None
        self.cap = DEFAULT_CAP if cap is None else cap
        self.calibrated = not self.cap_is_auto
        # A TopK encoder's slots do not depend on the cap.
        self.fixed = (self.encoder.sparse_slots(1) == self.encoder.sparse_slots(
            self.encoder.latent_dim))
        self.row_blocks = 1 if self.fixed else ROW_BLOCKS
        self.kernels = "xla"

    @property
    def host_kernels(self):
        """Whether the step's gathers, scatters and top-k run as the Numba loops."""
        return self.kernels == "numba"

    @property
    def slots(self):
        """The slots per row of the compiled step (0 in a dense phase)."""
        return 0 if self.cap == 0 else self.encoder.sparse_slots(self.cap)

    @property
    def may_overflow(self):
        return not self.fixed and self.slots < self.encoder.latent_dim

    def cache_key(self):
        """Changes whenever the compiled step must be rebuilt."""
        return ("sparse", self.slots, self.kernels)

    def cap_for(self, cap):
        """The cap `set_cap(cap)` would set.

        An adaptive cap above `DENSE_PHASE_FRACTION` of the latents (early
        in training, before the sparsity penalty has bitten) becomes 0: a
        dense phase, in which every step with an active latent runs the dense
        step and the selection only counts the active latents per row, so
        that the cap can come back once they are few.
        """
        cap = max(1, min(int(cap), self.encoder.latent_dim))
        if self.cap_is_auto and cap > self.encoder.latent_dim * DENSE_PHASE_FRACTION:
            return 0
        return cap

    def set_cap(self, cap):
        """Sets the slots per row (`cap_for(cap)`); the caller rebuilds the step."""
        self.cap = self.cap_for(cap)
        self.calibrated = True


def _on_cpu():
    """Whether the backend computes on the CPU (no GPU or TPU in sight)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() == "cpu"
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


def _distributed():
    return (distribution.num_replicas_in_sync() > 1
            or keras.distribution.distribution() is not None)


def refusal(model):
    """Why the sparse path cannot train `model` at all, or `None`."""
    if keras.backend.backend() not in ("jax", "tensorflow"):
        return f"the {keras.backend.backend()} backend has no sparse path"
    if _distributed():
        return "a distribution (more than one device) is set"
    reason = graph.check_graph(model)
    if reason is not None:
        return reason
    if model.encoder.sparse_slots(1) is None:
        return f"{type(model.encoder).__name__} has no sparse path"
    return None


def auto_refusal(model, jit_compile):
    """Why `sparse="auto"` keeps `model` dense here, or `None`."""
    encoder = model.encoder
    if keras.backend.backend() == "tensorflow" and not jit_compile:
        return ("TensorFlow without XLA (jit_compile=False) runs the sparse "
                "step's gathers one kernel at a time, slower than dense")
    if not _on_cpu():
        return ("the sparse path is not measured on GPUs/TPUs yet; "
                "compile(sparse=True) to use it")
    slots = encoder.sparse_slots(1)
    fixed = slots == encoder.sparse_slots(encoder.latent_dim)
    smallest = AUTO_MIN_LATENTS if fixed else AUTO_MIN_LATENTS_ADAPTIVE
    if encoder.latent_dim < smallest:
        return (f"latent_dim={encoder.latent_dim} < {smallest}: the dense "
                "step is as fast at this size")
    if fixed and slots > encoder.latent_dim * AUTO_MAX_SLOT_FRACTION:
        return (f"{slots} active latents of {encoder.latent_dim} per row: too dense "
                "for the sparse step to pay")
    return None


def numba_refusal():
    """Why the sparse step cannot run its kernels as the Numba loops here, or `None`."""
    if keras.backend.backend() != "jax":
        return ("the Numba kernels run under JAX only (TensorFlow's XLA step "
                "cannot call them)")
    if not _on_cpu():
        return "the Numba kernels run on a CPU only"
    return host.unavailable_reason()


def choose_kernels(sparse_kernels):
    """`(kernels, reason)`: `"numba"` or `"xla"` for `compile(sparse_kernels=...)`.

    `"auto"` takes the Numba loops wherever they can run (JAX on a CPU,
    Numba installed), `"numba"` raises a `ValueError` saying why where they
    cannot, `"xla"` keeps the `keras.ops` loops.
    """
    if sparse_kernels == "xla":
        return "xla", "keras.ops kernels (sparse_kernels='xla')"
    reason = numba_refusal()
    if reason is None:
        return "numba", "Numba kernels on every core"
    if sparse_kernels == "numba":
        raise ValueError(f"compile(sparse_kernels='numba') cannot run here: {reason}. "
                         "Use sparse_kernels='auto' or 'xla'.")
    return "xla", f"keras.ops kernels: {reason}"


def resolve(model, sparse, sparse_cap, jit_compile, sparse_kernels="auto"):
    """`(plan, reason)`: the `SparsePlan` (or `None`) and a sentence saying why.

    `sparse=True` raises a `ValueError` with the reason when the path
    cannot run; `"auto"` falls back to dense instead.
    """
    if sparse_kernels == "numba":
        choose_kernels(sparse_kernels)      # raises where the loops cannot run
    if sparse is False:
        return None, "compile(sparse=False)"
    reason = refusal(model)
    if reason is None and sparse == "auto":
        reason = auto_refusal(model, jit_compile)
    if reason is not None:
        if sparse is True:
            raise ValueError(
                f"compile(sparse=True) cannot train model '{model.name}' on the "
                f"sparse path: {reason}. Use sparse='auto' (dense where the sparse "
                "path does not apply) or sparse=False.")
        return None, reason
    plan = SparsePlan(model, sparse_cap)
    plan.kernels, kernels_reason = choose_kernels(sparse_kernels)
    if plan.fixed:
        return plan, f"{plan.slots} slots per row (the encoder's k); {kernels_reason}"
    return plan, ("slots per row adapted to the data" if plan.cap_is_auto
                  else f"{plan.slots} slots per row (sparse_cap)") + f"; {kernels_reason}"
