"""Peer gated-SAE implementations, timed the way each project trains.

Each function times one training step of another project's gated SAE, as
shipped, at the benchmark's size, Adam learning rate 1e-4, `beta_1=0`,
sparsity coefficient 1e-3. None of these packages is a dependency of the
kit; each is optional, and a missing one raises `PeerUnavailable` (the
table then says "skipped" and how to install it). Install on CPU:

    pip install torch==2.13.0+cpu        # a CPU wheel, where one is at hand;
                                         # plain `pip install torch` pulls CUDA
    pip install sae-lens                 # SAELens 6.x (needs torch)
    pip install --no-deps dictionary-learning einops
    pip install --no-deps gated-sae-tf   # needs tensorflow, as the kit has

What each one runs, and how it differs from the paper-exact step of
`reference_steps` (so the ratios compare implementations, not exactly
the same arithmetic):

* `saelens`: `sae_lens.GatedTrainingSAE` and the public seam
  `SAETrainer.step(batch)` (forward, loss, backward, gradient-norm clipping
  to 1, Adam, dead-feature bookkeeping) with a constant learning rate.
  SAELens 6.x computes the encoder matmul three times (gate, magnitude, and
  again in the aux loss), weights the L1 term by the decoder row norms, does
  not detach the decoder in the aux reconstruction, and does not renormalize
  decoder rows. `saelens-bf16` sets its own `autocast=True`.
* `dictionary-learning`: `dictionary_learning.trainers.gdm.GatedSAETrainer`
  and its `update(step, x)` (the paper's three loss terms; `ConstrainedAdam`,
  which removes the parallel gradient of the decoder and renormalizes it).
  `import dictionary_learning` needs `nnsight` for its activation buffer; the
  benchmark does not, so it loads the package without running its
  `__init__` when `nnsight` is missing. `dictionary-learning-bf16` wraps the
  update in `torch.autocast(bfloat16)`, as its `trainSAE(autocast_dtype=...)`
  does on a GPU.
* `sparsify` (TopK, `--architecture topk`): EleutherAI's sparsify
  (PyPI `eai-sparsify`) as its `Trainer` runs a step: `SparseCoder` with
  `SparseCoderConfig(num_latents=M, k=k)` (its fused top-k encoder, whose
  backward touches only the k chosen latents, and its sparse decoder,
  `embedding_bag` on a CPU), unit-norm decoder rows before the step, the
  loss `fvu + auxk_alpha * auxk_loss` with its dead mask
  (`dead_feature_threshold` 10M tokens: none dead in a benchmark), the
  parallel gradient removed from the decoder, `torch.optim.Adam` with the
  benchmark's learning rate and betas, the firing bookkeeping. On a CPU it
  runs with `SPARSIFY_DISABLE_TRITON=1`.
* `saelens-topk` (TopK): `sae_lens.TopKTrainingSAE` (dense; `k=k`,
  `aux_loss_coefficient` 1/32 as the kit's) through `SAETrainer.step`.
* `gated-sae-tf` / `gated-sae-tf-xla`: `gated_sae.GatedSAE` 0.1.1 trained
  with its own `fit` (TensorFlow only: it calls `tf.*`), `aux_weight=1`,
  `clip_norm=None`, `compile(jit_compile=...)` "auto" (off on a CPU) or
  True. It runs two encoder matmuls.

The PyTorch peers train on `cuda` when torch sees a GPU, else on the CPU,
with their batches already on the device.
"""

import importlib.util
import sys
import time
import types

from benchmarks.throughput import reference_steps as ref
from benchmarks.throughput.devices import (
    tensorflow_device, torch_device, torch_device_report, torch_prepare, torch_sync)


class PeerUnavailable(Exception):
    """The peer package cannot be imported; the message says how to install it."""


def _require(module, install):
    if importlib.util.find_spec(module) is None:
        raise PeerUnavailable(f"`{module}` is not importable ({install})")


# ---------------------------------------------------------------- SAELens
def time_saelens(input_dim, latent_dim, batch_size, steps, epochs, repeats,
                 precision="float32", min_time=0.0, device=None, seed=0):
    """SAELens's `GatedTrainingSAE` through `SAETrainer.step`."""
    def gated(sae_lens, device):
        return sae_lens.GatedTrainingSAE(sae_lens.GatedTrainingSAEConfig(
            d_in=input_dim, d_sae=latent_dim, device=device,
            l1_coefficient=ref.SPARSITY_COEFFICIENT))

    return _time_saelens_trainer(gated, input_dim, latent_dim, batch_size, steps,
                                 epochs, repeats, precision, min_time, device, seed)


def time_saelens_topk(input_dim, latent_dim, batch_size, steps, epochs, repeats, k,
                      precision="float32", min_time=0.0, device=None, seed=0):
    """SAELens's `TopKTrainingSAE` (AuxK coefficient 1/32) through `SAETrainer.step`."""
    def topk(sae_lens, device):
        return sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(
            d_in=input_dim, d_sae=latent_dim, k=k, device=device,
            aux_loss_coefficient=1 / 32))

    return _time_saelens_trainer(topk, input_dim, latent_dim, batch_size, steps,
                                 epochs, repeats, precision, min_time, device, seed)


def _time_saelens_trainer(make_sae, input_dim, latent_dim, batch_size, steps, epochs,
                          repeats, precision, min_time, device, seed):
    """Times `SAETrainer.step` of the SAE `make_sae(sae_lens, device)` builds."""
    _require("torch", "pip install torch")
    _require("sae_lens", "pip install sae-lens")
    import torch
    import sae_lens
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    device = torch_device(device)
    torch_prepare(torch, device)
    torch.manual_seed(seed)
    sae = make_sae(sae_lens, device)
    lr = ref.ADAM["learning_rate"]
    trainer = SAETrainer(
        SAETrainerConfig(
            total_training_samples=2**62, train_batch_size_samples=batch_size,
            lr=lr, lr_end=lr, adam_beta1=ref.ADAM["beta_1"],
            adam_beta2=ref.ADAM["beta_2"], device=device,
            autocast=precision == "bfloat16"),
        sae, data_provider=iter(()))
    batches = ref.torch_batches(torch, steps, batch_size, input_dim, device, seed)
    out = None

    def run(n_steps):
        nonlocal out
        for i in range(n_steps):
            out = trainer.step(batches[i % steps])
            trainer.n_training_steps += 1
        torch_sync(torch, device)

    return _finish(torch, device, run, steps, epochs, repeats, min_time,
                   batch_size, input_dim, latent_dim, lambda: out.loss,
                   library=f"sae-lens {sae_lens.__version__}, torch "
                   f"{torch.__version__}", precision=precision)


# ---------------------------------------------------------------- sparsify
def time_sparsify(input_dim, latent_dim, batch_size, steps, epochs, repeats, k,
                  precision="float32", min_time=0.0, device=None, seed=0):
    """One step of sparsify's `Trainer.fit`, its parts called as it calls them."""
    import os

    _require("torch", "pip install torch")
    _require("sparsify", "pip install eai-sparsify")
    import torch

    device = torch_device(device)
    if device == "cpu":
        os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    import sparsify
    from sparsify import SparseCoder, SparseCoderConfig

    torch_prepare(torch, device)
    torch.manual_seed(seed)
    sae = SparseCoder(input_dim, SparseCoderConfig(num_latents=latent_dim, k=k),
                      device=device)
    optimizer = torch.optim.Adam(
        sae.parameters(), lr=ref.ADAM["learning_rate"],
        betas=(ref.ADAM["beta_1"], ref.ADAM["beta_2"]), eps=ref.ADAM["epsilon"])
    auxk_alpha, dead_threshold = 1 / 32, 10_000_000       # sparsify's defaults
    tokens_since_fired = torch.zeros(latent_dim, dtype=torch.long, device=device)
    batches = ref.torch_batches(torch, steps, batch_size, input_dim, device, seed)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                              enabled=precision == "bfloat16")
    out = None

    def run(n_steps):
        nonlocal out
        for i in range(n_steps):
            x = batches[i % steps]
            sae.set_decoder_norm_to_unit_norm()
            dead_mask = tokens_since_fired > dead_threshold
            with autocast:
                out = sae(x, dead_mask=dead_mask)
                loss = out.fvu + auxk_alpha * out.auxk_loss
            loss.backward()
            sae.remove_gradient_parallel_to_decoder_directions()
            optimizer.step()
            optimizer.zero_grad()
            with torch.no_grad():
                did_fire = torch.zeros(latent_dim, dtype=torch.bool, device=device)
                did_fire[out.latent_indices.flatten()] = True
                tokens_since_fired.add_(x.shape[0])
                tokens_since_fired[did_fire] = 0
        torch_sync(torch, device)

    return _finish(torch, device, run, steps, epochs, repeats, min_time,
                   batch_size, input_dim, latent_dim, lambda: out.fvu,
                   library=f"eai-sparsify {getattr(sparsify, '__version__', '?')}, "
                   f"torch {torch.__version__}", precision=precision)


# ---------------------------------------------------- dictionary_learning
def _import_gdm():
    """`GatedSAETrainer`, importing the package without `nnsight` if need be."""
    if "dictionary_learning" not in sys.modules:
        _require("dictionary_learning",
                 "pip install --no-deps dictionary-learning einops")
    _require("einops", "pip install einops")
    try:
        importlib.import_module("dictionary_learning")
    except ImportError:
        sys.modules.pop("dictionary_learning", None)
        spec = importlib.util.find_spec("dictionary_learning")
        package = types.ModuleType("dictionary_learning")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["dictionary_learning"] = package
    from dictionary_learning.trainers.gdm import GatedSAETrainer

    try:
        from importlib.metadata import version

        label = f"dictionary-learning {version('dictionary-learning')}"
    except Exception:  # noqa: BLE001
        label = "dictionary-learning"
    return GatedSAETrainer, label


def time_dictionary_learning(input_dim, latent_dim, batch_size, steps, epochs,
                             repeats, precision="float32", min_time=0.0,
                             device=None, seed=0):
    _require("torch", "pip install torch")
    import contextlib

    import torch

    GatedSAETrainer, label = _import_gdm()
    device = torch_device(device)
    torch_prepare(torch, device)
    trainer = GatedSAETrainer(
        steps=2**62, activation_dim=input_dim, dict_size=latent_dim, layer=0,
        lm_name="benchmark", lr=ref.ADAM["learning_rate"],
        l1_penalty=ref.SPARSITY_COEFFICIENT, warmup_steps=0,
        sparsity_warmup_steps=None, seed=seed, device=device, wandb_name=None)
    batches = ref.torch_batches(torch, steps, batch_size, input_dim, device, seed)
    autocast = (torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
                if precision == "bfloat16" else contextlib.nullcontext())
    counter = [0]

    def run(n_steps):
        for i in range(n_steps):
            with autocast:
                trainer.update(counter[0], batches[i % steps])
            counter[0] += 1
        torch_sync(torch, device)

    return _finish(torch, device, run, steps, epochs, repeats, min_time,
                   batch_size, input_dim, latent_dim,
                   lambda: trainer.loss(batches[0], counter[0]),
                   library=f"{label}, torch {torch.__version__}",
                   precision=precision)


def _finish(torch, device, run, steps, epochs, repeats, min_time, batch_size,
            input_dim, latent_dim, last_loss, **extra):
    t0 = time.perf_counter()
    run(2)
    warmup_s = time.perf_counter() - t0
    passes, times = ref.time_repeats(lambda k: run(k * steps), epochs, repeats,
                                     min_time)
    result = ref.timing_summary(times, passes * steps, batch_size, input_dim,
                                latent_dim)
    with torch.no_grad():
        loss = float(last_loss())
    result.update(warmup_s=warmup_s, final_loss=loss,
                  **torch_device_report(torch, device), **extra)
    return result


# ----------------------------------------------------------- gated-sae-tf
def time_gated_sae_tf(input_dim, latent_dim, batch_size, steps, epochs, repeats,
                      jit_compile="auto", min_time=0.0, seed=0):
    _require("gated_sae", "pip install --no-deps gated-sae-tf")
    _require("tensorflow", "gated-sae-tf needs TensorFlow")
    import keras
    import tensorflow as tf
    from gated_sae import GatedSAE

    if keras.backend.backend() != "tensorflow":
        raise PeerUnavailable("gated-sae-tf needs KERAS_BACKEND=tensorflow")
    keras.utils.set_random_seed(seed)
    x = ref.random_batches(steps, batch_size, input_dim, seed)
    sae = GatedSAE(input_dim=input_dim, encoding_dim=latent_dim,
                   lambda_sparse=ref.SPARSITY_COEFFICIENT,
                   aux_weight=ref.AUX_COEFFICIENT, clip_norm=None)
    sae(x[:2])
    sae.compile(optimizer=keras.optimizers.Adam(
        ref.ADAM["learning_rate"], beta_1=ref.ADAM["beta_1"],
        beta_2=ref.ADAM["beta_2"], epsilon=ref.ADAM["epsilon"]),
        jit_compile=jit_compile)
    history = None

    def fit(n_epochs, rows=None):
        nonlocal history
        history = sae.fit(x[:rows], epochs=n_epochs, batch_size=batch_size,
                          verbose=0)
        sae.b_dec.numpy()                        # wait for the device

    t0 = time.perf_counter()
    fit(1, rows=min(2, steps) * batch_size)
    warmup_s = time.perf_counter() - t0
    n_epochs, times = ref.time_repeats(fit, epochs, repeats, min_time)
    result = ref.timing_summary(times, n_epochs * steps, batch_size, input_dim,
                                latent_dim)
    result.update(
        library=f"gated-sae-tf (tensorflow {tf.__version__})",
        **tensorflow_device(),
        precision="float32", jit_compile=jit_compile, warmup_s=warmup_s,
        final_loss=float(history.history["loss"][-1]))
    return result
