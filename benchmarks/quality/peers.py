"""The trainers `python -m benchmarks.quality` compares: ours (Keras) and two PyTorch peers.

Every trainer gets the same rows in the same order (`batches(...)`), the
same number of optimizer steps, batch size, Adam(beta_1=0, beta_2=0.999),
peak learning rate, learning-rate warm-up and sparsity-coefficient warm-up
lengths, and returns a `Trained`: the decoder rows, a `predict(x) ->
(latents, reconstruction)` on held-out rows, and the training seconds.
Nothing else is shared: each peer runs its own code as shipped.

* `ours_gated`: `gsl.build_gated_sae` (`encoder_init_scale`, `aux_trains_decoder`,
  `weight_by_decoder_norm` from the contender) + `model.fit` (`jit_compile=True`),
  `gsl.SparsityWarmup`, Adam(beta_1=0) with a schedule (`schedule=`):
  `"cosine"` (`WarmupCosineDecay` to zero: the README recipe before issue 10), `"wsd"`
  (`WarmupStableDecay`, linear decay over the last `decay_fraction` of
  the steps) or `"constant"` (`WarmupStableDecay(decay_fraction=0)`);
  `remove_parallel_gradient=`; `b_dec` initialized at the data `"mean"`,
  `"zero"` or the `"median"` (geometric median, Weiszfeld iterations).
* `ours_topk`: `gsl.build_sae("topk", ..., k=, k_aux=input_dim // 2)`, the
  same schedule choices, `b_dec` at the data mean.
* `dictionary_learning`: `dictionary_learning.trainers.gdm.GatedSAETrainer`
  and its `update(step, x)`: the paper's three loss terms (same scale as
  ours: squared error summed over features, `lambda * sum relu(pi_gate)`,
  aux), `ConstrainedAdam` (decoder-parallel gradient removed, decoder
  renormalized), `b_dec` = 0, constant learning rate after its warm-up
  (`decay=True`: its own `decay_start`, a linear decay to 0 over the same
  last `decay_fraction` of the steps).
* `saelens`: `sae_lens.GatedTrainingSAE` (6.x) and the public seam
  `SAETrainer.step(batch)`: its L1 term is weighted by the decoder row norms
  (rows start at norm 0.1 and are not constrained), gradient-norm clipping
  to 1, `b_dec` = 0, its `"constant"` schedule with `lr_warm_up_steps`
  (`decay=True`: its own `lr_decay_steps`, linear to 0), `l1_warm_up_steps`.

Each peer is optional: a missing package raises `PeerUnavailable`, whose
message says how to install it. PyTorch runs on one thread
(`torch.set_num_threads(1)`; `$QUALITY_TORCH_THREADS` to change): on 2
shared cores its default two threads made a step 8x slower (156 vs 19 ms).
"""

import dataclasses
import importlib.util
import os
import sys
import time
import types

import numpy as np


class PeerUnavailable(Exception):
    """A peer package cannot be imported; the message says how to install it."""


@dataclasses.dataclass
class Trained:
    decoder_rows: np.ndarray          # (latent_dim, input_dim), any norm
    predict: object                   # x -> (latents, reconstruction), numpy
    seconds: float
    library: str


def batches(x_train, steps, batch_size, seed):
    """The rows of `steps` batches: whole shuffled passes, cut to length."""
    rng = np.random.default_rng(seed)
    needed = steps * batch_size
    reps = int(np.ceil(needed / len(x_train)))
    order = np.concatenate([rng.permutation(len(x_train)) for _ in range(reps)])
    return np.ascontiguousarray(x_train[order[:needed]], dtype="float32")


def geometric_median(x, iterations=100, sample=20000, seed=0, tol=1e-6):
    """Weiszfeld's algorithm on up to `sample` rows (float64)."""
    rng = np.random.default_rng(seed)
    if len(x) > sample:
        x = x[rng.choice(len(x), sample, replace=False)]
    x = np.asarray(x, "float64")
    median = x.mean(axis=0)
    for _ in range(iterations):
        distance = np.maximum(np.linalg.norm(x - median, axis=1), 1e-12)
        weights = 1.0 / distance
        update = (weights[:, None] * x).sum(axis=0) / weights.sum()
        if np.linalg.norm(update - median) <= tol * max(np.linalg.norm(median), 1.0):
            return update
        median = update
    return median


def _warmups(steps, warmup_fraction, sparsity_warmup_fraction):
    return (max(int(steps * warmup_fraction), 1),
            max(int(steps * sparsity_warmup_fraction), 1))


# ---------------------------------------------------------------- ours
def _schedule(name, lr, steps, warmup, decay_fraction):
    import gated_sae_layers as gsl
    from gated_sae_layers.schedules import WarmupStableDecay

    if name == "cosine":
        return gsl.WarmupCosineDecay(lr, warmup_steps=warmup, total_steps=steps)
    if name == "wsd":
        return WarmupStableDecay(lr, warmup, steps, decay_fraction=decay_fraction)
    if name == "constant":
        return WarmupStableDecay(lr, warmup, steps, decay_fraction=0.0)
    raise ValueError(f"unknown schedule {name!r}")


def _continue_in(model, then, batch_size, data, adam):
    """Moves `model`'s weights and optimizer state into `then` (a model of
    the same builder: the same variables in the same order), compiled with
    `Adam(**adam)`, and trains it on `data`, its steps counted on from
    `model`'s."""
    import keras

    then.set_weights(model.get_weights())
    then.compile(optimizer=keras.optimizers.Adam(**adam), jit_compile=True)
    then.optimizer.build(then.trainable_variables)
    if len(then.optimizer.variables) != len(model.optimizer.variables):
        raise ValueError("the two phases' optimizers hold different variables")
    for source, target in zip(model.optimizer.variables, then.optimizer.variables):
        target.assign(np.asarray(source))
    then.fit(data, epochs=1, batch_size=batch_size, shuffle=False, verbose=0)
    return then


def _fit_ours(model, data, x_train, *, b_dec, steps, batch_size, lr, schedule,
              decay_fraction, warmup_fraction, sparsity_warmup_fraction,
              global_clipnorm=None, resample_dead=False, then=None, switch_fraction=None):
    import keras

    import gated_sae_layers as gsl

    if b_dec == "mean":
        model.decoder.bias.assign(x_train.mean(axis=0).astype("float32"))
    elif b_dec == "median":
        model.decoder.bias.assign(geometric_median(x_train).astype("float32"))
    elif b_dec != "zero":
        raise ValueError(f"unknown b_dec {b_dec!r}")
    warmup, sparsity_warmup = _warmups(steps, warmup_fraction, sparsity_warmup_fraction)
    adam = dict(learning_rate=_schedule(schedule, lr, steps, warmup, decay_fraction),
                beta_1=0.0, global_clipnorm=global_clipnorm)
    model.compile(optimizer=keras.optimizers.Adam(**adam), jit_compile=True)
    callbacks = ([gsl.SparsityWarmup(steps=sparsity_warmup)]
                 if model.sparsity_penalties() else [])
    if resample_dead:   # Bricken et al.'s resampling, over the first half
        callbacks.append(gsl.DeadLatentResampler(
            x_train[:8192], check_every=max(steps // 10, 1), until_step=steps // 2))
    start = time.perf_counter()
    switch = len(data) if then is None else int(round(steps * switch_fraction)) * batch_size
    model.fit(data[:switch], epochs=1, batch_size=batch_size, shuffle=False, verbose=0,
              callbacks=callbacks)
    if then is not None:   # phase 2: another model of the builder, on the rest
        model = _continue_in(model, then, batch_size, data[switch:], adam)
    seconds = time.perf_counter() - start

    def predict(x):
        out = model.predict(x, batch_size=2048, verbose=0)
        return np.asarray(out["latents"]), np.asarray(out["reconstruction"])

    return Trained(np.asarray(model.decoder.kernel), predict, seconds,
                   f"gated-sae-layers (keras {keras.__version__}, "
                   f"{keras.backend.backend()})")


def train_ours_gated(data, x_train, latent_dim, coefficient, *, seed,
                     remove_parallel_gradient=False, aux="frozen",
                     encoder_init_scale=1.0, free_decoder=False,
                     decoder_lr_multiplier=1.0, decoder_lr_decaying_from=None,
                     decoder_lr_falling_fraction=1.0, aux_coefficient=1.0,
                     aux_frozen_after=None, **fit_kwargs):
    """`build_gated_sae` with `encoder_init_scale` (`W_gate = s W_dec^T`).

    `aux="trained"` (`aux_trains_decoder=True`) and `free_decoder=True`
    (`weight_by_decoder_norm=True`: free decoder rows starting at norm `s`,
    `W_gate = W_dec^T`, the penalty weighted by the row norms) are SAELens's
    choices, not the paper's. `decoder_lr_multiplier`:
    `decoder_learning_rate_multiplier` (the optimizer steps `W_dec` that many
    times as far as the other weights). `decoder_lr_decaying_from=m0`: that
    multiplier falls linearly from `m0` at step 0 to 1 at
    `decoder_lr_falling_fraction` of the steps (`PolynomialDecay`), 1 after.
    `aux_coefficient`: alpha of the aux term. `aux_frozen_after=f` (with
    `aux="trained"`): the aux term trains `W_dec` for the first `f` of the
    steps, then the weights and Adam's state move into the same model with
    the aux term frozen (the paper's), which trains on the rest.
    """
    import keras

    import gated_sae_layers as gsl

    if aux not in ("frozen", "trained"):
        raise ValueError(f"unknown aux {aux!r}")
    if decoder_lr_decaying_from:
        decoder_lr_multiplier = keras.optimizers.schedules.PolynomialDecay(
            float(decoder_lr_decaying_from),
            max(int(round(fit_kwargs["steps"] * decoder_lr_falling_fraction)), 1), 1.0)

    def build(aux_trains_decoder):
        keras.utils.set_random_seed(seed)
        return gsl.build_gated_sae(
            x_train.shape[1], latent_dim, float(coefficient),
            remove_parallel_gradient=remove_parallel_gradient and not free_decoder,
            encoder_init_scale=encoder_init_scale, aux_trains_decoder=aux_trains_decoder,
            weight_by_decoder_norm=free_decoder,
            decoder_learning_rate_multiplier=decoder_lr_multiplier,
            aux_coefficient=aux_coefficient)

    model = build(aux == "trained")
    if aux_frozen_after is not None:
        if aux != "trained":
            raise ValueError("aux_frozen_after needs aux='trained'")
        fit_kwargs.update(then=build(False), switch_fraction=aux_frozen_after)
    return _fit_ours(model, data, x_train, **fit_kwargs)


def train_ours_topk(data, x_train, latent_dim, k, *, seed, **fit_kwargs):
    import keras

    import gated_sae_layers as gsl

    keras.utils.set_random_seed(seed)
    d = x_train.shape[1]
    model = gsl.build_sae("topk", d, latent_dim, k=int(k),
                          k_aux=max(1, min(d // 2, latent_dim)))
    return _fit_ours(model, data, x_train, **fit_kwargs)


# ---------------------------------------------------------------- peers
def _require(module, install):
    if importlib.util.find_spec(module) is None:
        raise PeerUnavailable(f"`{module}` is not importable ({install})")


def _torch():
    import torch

    torch.set_num_threads(int(os.environ.get("QUALITY_TORCH_THREADS", "1")))
    return torch


def _torch_predict(torch, encode, decode):
    def predict(x):
        latents, recon = [], []
        with torch.no_grad():
            for i in range(0, len(x), 2048):
                f = encode(torch.from_numpy(np.ascontiguousarray(x[i:i + 2048])))
                latents.append(f.numpy())
                recon.append(decode(f).numpy())
        return np.concatenate(latents), np.concatenate(recon)
    return predict


def import_gdm():
    """`GatedSAETrainer`, importing `dictionary_learning` without `nnsight`."""
    _require("torch", "pip install torch --index-url https://download.pytorch.org/whl/cpu")
    _require("einops", "pip install einops")
    if "dictionary_learning" not in sys.modules:
        _require("dictionary_learning", "pip install --no-deps dictionary-learning einops")
        try:
            importlib.import_module("dictionary_learning")
        except ImportError:   # its __init__ imports nnsight's buffer; we need none
            sys.modules.pop("dictionary_learning", None)
            spec = importlib.util.find_spec("dictionary_learning")
            package = types.ModuleType("dictionary_learning")
            package.__path__ = list(spec.submodule_search_locations)
            sys.modules["dictionary_learning"] = package
    from dictionary_learning.trainers.gdm import GatedSAETrainer

    return GatedSAETrainer


def train_dictionary_learning(data, x_train, latent_dim, coefficient, *, seed, steps,
                              batch_size, lr, warmup_fraction, sparsity_warmup_fraction,
                              decay=False, decay_fraction=0.2):
    GatedSAETrainer = import_gdm()
    torch = _torch()
    from importlib.metadata import version

    warmup, sparsity_warmup = _warmups(steps, warmup_fraction, sparsity_warmup_fraction)
    trainer = GatedSAETrainer(
        steps=steps, activation_dim=x_train.shape[1], dict_size=latent_dim, layer=0,
        lm_name="quality", lr=lr, l1_penalty=float(coefficient), warmup_steps=warmup,
        sparsity_warmup_steps=sparsity_warmup,
        decay_start=int(round(steps * (1 - decay_fraction))) if decay else None,
        seed=seed, device="cpu", wandb_name=None)
    tensor = torch.from_numpy(data)
    start = time.perf_counter()
    for step in range(steps):
        trainer.update(step, tensor[step * batch_size:(step + 1) * batch_size])
    seconds = time.perf_counter() - start
    ae = trainer.ae
    return Trained(ae.decoder.weight.detach().numpy().T.copy(),
                   _torch_predict(torch, ae.encode, ae.decode), seconds,
                   f"dictionary-learning {version('dictionary-learning')}, "
                   f"torch {torch.__version__}")


def train_saelens(data, x_train, latent_dim, coefficient, *, seed, steps, batch_size,
                  lr, warmup_fraction, sparsity_warmup_fraction, decay=False,
                  decay_fraction=0.2, decoder_init_norm=0.1, detach_aux=False):
    """`decoder_init_norm` (SAELens's default 0.1) and `detach_aux=True`
    (the aux reconstruction through `W_dec.detach()`, `b_dec.detach()`, as the
    paper and the other two) are ablations."""
    _require("torch", "pip install torch --index-url https://download.pytorch.org/whl/cpu")
    _require("sae_lens", "pip install sae-lens")
    torch = _torch()
    import sae_lens
    from sae_lens import GatedTrainingSAE, GatedTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    warmup, sparsity_warmup = _warmups(steps, warmup_fraction, sparsity_warmup_fraction)
    torch.manual_seed(seed)
    sae_class = GatedTrainingSAE
    if detach_aux:
        class DetachedAuxGatedSAE(GatedTrainingSAE):
            def calculate_aux_loss(self, step_input, feature_acts, hidden_pre, sae_out):
                losses = super().calculate_aux_loss(step_input, feature_acts,
                                                    hidden_pre, sae_out)
                centered = step_input.sae_in - self.b_dec * self.cfg.apply_b_dec_to_input
                gate = torch.relu(centered @ self.W_enc + self.b_gate)
                frozen = gate @ self.W_dec.detach() + self.b_dec.detach()
                losses["auxiliary_reconstruction_loss"] = (
                    (frozen - step_input.sae_in).pow(2).sum(dim=-1).mean())
                return losses
        sae_class = DetachedAuxGatedSAE
    sae = sae_class(GatedTrainingSAEConfig(
        d_in=x_train.shape[1], d_sae=latent_dim, device="cpu",
        l1_coefficient=float(coefficient), l1_warm_up_steps=sparsity_warmup,
        decoder_init_norm=decoder_init_norm))
    trainer = SAETrainer(
        SAETrainerConfig(
            total_training_samples=steps * batch_size,
            train_batch_size_samples=batch_size, lr=lr, lr_end=lr,
            lr_scheduler_name="constant", lr_warm_up_steps=warmup,
            lr_decay_steps=int(round(steps * decay_fraction)) if decay else 0,
            adam_beta1=0.0, adam_beta2=0.999, device="cpu"),
        sae, data_provider=iter(()))
    tensor = torch.from_numpy(data)
    start = time.perf_counter()
    for step in range(steps):
        trainer.step(tensor[step * batch_size:(step + 1) * batch_size])
        trainer.n_training_steps += 1
    seconds = time.perf_counter() - start
    sae.eval()
    return Trained(sae.W_dec.detach().numpy().copy(),
                   _torch_predict(torch, sae.encode, sae.decode), seconds,
                   f"sae-lens {sae_lens.__version__}, torch {torch.__version__}")


TRAINERS = {
    "ours_gated": train_ours_gated,
    "ours_topk": train_ours_topk,
    "dictionary_learning": train_dictionary_learning,
    "saelens": train_saelens,
}
