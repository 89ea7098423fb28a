"""Hand-written reference training steps of the paper-exact gated SAE.

`python -m benchmarks.throughput` times the kit's stock `model.fit` against these: the same
math, the same initialization and the same optimizer, written directly in
JAX (`jax.jit`, Adam by hand) and in PyTorch (eager, or `torch.compile`), so
that the ratio "ours / reference" says how much the kit's generality costs.

The step, with `x_c = x - b_dec` (Rajamanoharan et al. 2024, arXiv:2404.16014,
eq. 3-8; exactly what `gsl.build_gated_sae` trains):

```
projection = x_c @ W_gate                               # ONE encoder matmul
pi_gate    = projection + b_gate
f          = 1[pi_gate > 0] * relu(projection * exp(r_mag) + b_mag)
x_hat      = f @ W_dec + b_dec
x_aux      = relu(pi_gate) @ sg(W_dec) + sg(b_dec)      # frozen decoder
loss       = mean ||x - x_hat||^2
             + lambda * mean sum relu(pi_gate)
             + alpha  * mean ||x - x_aux||^2
```

then Adam (`beta_1=0`, `beta_2=0.999`, `epsilon=1e-7`, the Keras formula),
then every decoder row is divided by `max(||row||, 1e-8)`. With
`remove_parallel_gradient=True` the gradient of `W_dec` first loses its
component along each row, as in `UnitNormDecoder`.

Initialization as `build_gated_sae`: `W_dec` Glorot-uniform with every row
scaled to unit norm, `W_gate = W_dec^T` (tied), biases and `r_mag` zero.

Precision:
* `"float32"`: float32 everywhere (on a GPU, XLA's default matmul precision,
  which is TF32 on Hopper; the PyTorch step sets
  `torch.set_float32_matmul_precision("high")` to match).
* `"bfloat16"`: float32 parameters and Adam state, bfloat16 matmul inputs.
  The JAX step casts the parameters and the batch to bfloat16 inside the
  loss (the gradients come back float32), computes the elementwise work in
  bfloat16 and the three loss terms in float32: what Keras's
  `mixed_bfloat16` policy does. The PyTorch step runs its forward pass under
  `torch.autocast(dtype=torch.bfloat16)` (matmuls in bfloat16; elementwise
  ops that meet a float32 bias promote to float32, as autocast does).

The timing helpers at the end (`time_repeats`, `timing_summary`,
`memory_estimate`) are shared with `peers` and `python -m benchmarks.throughput`.
"""

import math
import statistics
import time

import numpy as np

from benchmarks.throughput.devices import (
    jax_memory, jax_peak_since, torch_device, torch_device_report, torch_prepare,
    torch_sync)

ADAM = {"learning_rate": 1e-4, "beta_1": 0.0, "beta_2": 0.999, "epsilon": 1e-7}
SPARSITY_COEFFICIENT = 1e-3
AUX_COEFFICIENT = 1.0
NORM_EPSILON = 1e-8            # UnitNormRows / normalize_rows
PARALLEL_EPSILON = 1e-8        # project_out_parallel_gradient
FORWARD_MATMULS = 3
BACKWARD_MATMULS = 4           # lower bound; the compiled graph has 5
GRAPH_MATMULS = 8
PRECISIONS = ("float32", "bfloat16")


# ---------------------------------------------------------------- the data
def init_params(input_dim, latent_dim, seed=0):
    """The kit's initialization, in numpy float32 (see the module docstring).

    Returns a dict with `W_gate (input_dim, latent_dim)`, `b_gate`, `r_mag`,
    `b_mag` (`(latent_dim,)`), `W_dec (latent_dim, input_dim)`, `b_dec`
    (`(input_dim,)`).
    """
    rng = np.random.default_rng(seed)
    limit = math.sqrt(6.0 / (latent_dim + input_dim))        # Glorot uniform
    w_dec = rng.random((latent_dim, input_dim), dtype=np.float32)
    w_dec *= np.float32(2.0 * limit)
    w_dec -= np.float32(limit)
    norms = np.sqrt(np.einsum("ij,ij->i", w_dec, w_dec))[:, None]
    w_dec /= np.maximum(norms, NORM_EPSILON)
    zeros = np.zeros((latent_dim,), np.float32)
    return {"W_gate": np.ascontiguousarray(w_dec.T), "b_gate": zeros.copy(),
            "r_mag": zeros.copy(), "b_mag": zeros.copy(), "W_dec": w_dec,
            "b_dec": np.zeros((input_dim,), np.float32)}


def random_batches(steps, batch_size, input_dim, seed=0):
    """`steps * batch_size` standard-normal float32 rows (the benchmark's data)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((steps * batch_size, input_dim), dtype=np.float32)


# ------------------------------------------------------------------- JAX
def make_jax_step(precision="float32", remove_parallel_gradient=False,
                  sparsity_coefficient=SPARSITY_COEFFICIENT,
                  aux_coefficient=AUX_COEFFICIENT, adam=ADAM):
    """`step(params, m, v, t, x) -> (params, m, v, t, loss)`, not yet jitted."""
    import jax
    import jax.numpy as jnp

    compute = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
    lr, b1, b2, eps = (adam[k] for k in ("learning_rate", "beta_1", "beta_2",
                                         "epsilon"))
    sg = jax.lax.stop_gradient

    def loss_fn(p, x):
        c = {k: w.astype(compute) for k, w in p.items()}      # no-op in float32
        x_c = x.astype(compute) - c["b_dec"]
        projection = x_c @ c["W_gate"]
        pi_gate = projection + c["b_gate"]
        magnitude = projection * jnp.exp(c["r_mag"]) + c["b_mag"]
        f = jnp.where(pi_gate > 0, jax.nn.relu(magnitude), 0)
        x_hat = (f @ c["W_dec"] + c["b_dec"]).astype(jnp.float32)
        gate = jax.nn.relu(pi_gate)
        x_aux = (gate @ sg(c["W_dec"]) + sg(c["b_dec"])).astype(jnp.float32)
        recon = jnp.mean(jnp.sum(jnp.square(x - x_hat), axis=-1))
        sparsity = jnp.mean(jnp.sum(gate.astype(jnp.float32), axis=-1))
        aux = jnp.mean(jnp.sum(jnp.square(x - x_aux), axis=-1))
        return recon + sparsity_coefficient * sparsity + aux_coefficient * aux

    def step(p, m, v, t, x):
        loss, g = jax.value_and_grad(loss_fn)(p, x)
        if remove_parallel_gradient:
            w, gw = p["W_dec"], g["W_dec"]
            along = jnp.sum(gw * w, -1, keepdims=True) / (
                jnp.sum(w * w, -1, keepdims=True) + PARALLEL_EPSILON)
            g = dict(g, W_dec=gw - along * w)
        t = t + 1.0
        lr_t = lr * jnp.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)   # Keras's Adam
        m = jax.tree.map(lambda m, g: m + (g - m) * (1.0 - b1), m, g)
        v = jax.tree.map(lambda v, g: v + (g * g - v) * (1.0 - b2), v, g)
        p = jax.tree.map(lambda p, m, v: p - lr_t * m / (jnp.sqrt(v) + eps), p, m, v)
        w = p["W_dec"]
        norms = jnp.sqrt(jnp.sum(w * w, axis=-1, keepdims=True))
        p = dict(p, W_dec=w / jnp.maximum(norms, NORM_EPSILON))
        return p, m, v, t, loss

    return step


def time_jax_step(input_dim, latent_dim, batch_size, steps, epochs, repeats,
                  precision="float32", remove_parallel_gradient=False,
                  min_time=0.0, profile_dir=None, seed=0):
    """Times the hand-written JAX step with the data already on the device.

    `steps` distinct batches are put on the device once; one timing runs
    `epochs` passes over them (`steps * epochs` steps, more if `min_time`
    asks for it), then waits with `block_until_ready`. Returns a dict of
    timings and memory figures.
    """
    import jax
    import jax.numpy as jnp

    device = jax.devices()[0]
    before = jax_memory(device)
    params = jax.device_put(init_params(input_dim, latent_dim, seed), device)
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)  # noqa: E731
    m, v = zeros(params), zeros(params)
    t = jax.device_put(jnp.zeros((), jnp.float32), device)
    x = jax.device_put(random_batches(steps, batch_size, input_dim, seed), device)
    batches = [x[i * batch_size:(i + 1) * batch_size] for i in range(steps)]
    del x
    jax.block_until_ready(batches)

    donate = (0, 1, 2) if device.platform != "cpu" else ()
    step = make_jax_step(precision, remove_parallel_gradient)
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=donate).lower(
        params, m, v, t, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    analysis = _memory_analysis(compiled)

    state = [params, m, v, t]
    loss = None

    def run(n_steps):
        nonlocal loss
        for i in range(n_steps):
            *new_state, loss = compiled(*state, batches[i % steps])
            state[:] = new_state
        jax.block_until_ready((state[0], loss))

    t0 = time.perf_counter()
    run(2)                                                  # warm-up
    warmup_s = time.perf_counter() - t0
    passes, times = time_repeats(lambda k: run(k * steps), epochs, repeats, min_time)
    result = timing_summary(times, passes * steps, batch_size, input_dim, latent_dim)
    result.update(
        library=f"jax {jax.__version__}", device=device.platform,
        device_detail=str(device), precision=precision,
        compile_s=compile_s, warmup_s=warmup_s, final_loss=float(loss),
        xla_memory=analysis,
        peak_device_bytes=jax_peak_since(device, before))
    if profile_dir:
        jax.profiler.start_trace(profile_dir)
        run(3)
        jax.profiler.stop_trace()
        result["profile_dir"] = profile_dir
    return result


def _memory_analysis(compiled):
    """XLA's own memory figures for one compiled step (bytes), or None."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if ma is None:
        return None
    keys = ("argument_size_in_bytes", "output_size_in_bytes",
            "alias_size_in_bytes", "temp_size_in_bytes")
    return {k: int(getattr(ma, k)) for k in keys if hasattr(ma, k)}


# --------------------------------------------------------------- PyTorch
def make_torch_sae(input_dim, latent_dim, device, precision="float32", seed=0):
    """An `nn.Module` whose `forward(x)` is the gated SAE loss (module docstring)."""
    import torch

    bf16 = precision == "bfloat16"
    device_type = torch.device(device).type

    class GatedSAELoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, value in init_params(input_dim, latent_dim, seed).items():
                setattr(self, name, torch.nn.Parameter(
                    torch.from_numpy(value).to(device)))

        def forward(self, x):
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                x_c = x - self.b_dec
                projection = x_c @ self.W_gate
                pi_gate = projection + self.b_gate
                magnitude = projection * torch.exp(self.r_mag) + self.b_mag
                f = torch.where(pi_gate > 0, torch.relu(magnitude), 0.0)
                x_hat = f @ self.W_dec + self.b_dec
                gate = torch.relu(pi_gate)
                x_aux = gate @ self.W_dec.detach() + self.b_dec.detach()
            recon = (x - x_hat.float()).pow(2).sum(-1).mean()
            sparsity = gate.float().sum(-1).mean()
            aux = (x - x_aux.float()).pow(2).sum(-1).mean()
            return (recon + SPARSITY_COEFFICIENT * sparsity
                    + AUX_COEFFICIENT * aux)

    return GatedSAELoss()


def torch_adam(torch, parameters):
    """`torch.optim.Adam` with the benchmark's settings, fused where possible."""
    kwargs = dict(lr=ADAM["learning_rate"], betas=(ADAM["beta_1"], ADAM["beta_2"]),
                  eps=ADAM["epsilon"])
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, fused=True, **kwargs), "fused"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(parameters, foreach=True, **kwargs), "foreach"


def torch_batches(torch, steps, batch_size, input_dim, device, seed=0):
    x = torch.from_numpy(random_batches(steps, batch_size, input_dim, seed)).to(device)
    return list(x.split(batch_size))


def time_torch_step(input_dim, latent_dim, batch_size, steps, epochs, repeats,
                    precision="float32", compile=False,
                    remove_parallel_gradient=False, min_time=0.0, device=None,
                    seed=0):
    """Times the hand-written PyTorch step (eager, or its loss `torch.compile`d)."""
    import torch

    device = torch_device(device)
    torch_prepare(torch, device)     # TF32 on a GPU, as XLA's default float32
    sae = make_torch_sae(input_dim, latent_dim, device, precision, seed)
    optimizer, adam_kind = torch_adam(torch, sae.parameters())
    loss_fn = torch.compile(sae) if compile else sae
    batches = torch_batches(torch, steps, batch_size, input_dim, device, seed)
    w_dec = sae.W_dec
    loss = None

    def one_step(x):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(x)
        loss.backward()
        if remove_parallel_gradient:
            with torch.no_grad():
                g = w_dec.grad
                along = (g * w_dec).sum(-1, keepdim=True) / (
                    (w_dec * w_dec).sum(-1, keepdim=True) + PARALLEL_EPSILON)
                g.sub_(along * w_dec)
        optimizer.step()
        with torch.no_grad():
            w_dec.div_(w_dec.norm(dim=-1, keepdim=True).clamp_min_(NORM_EPSILON))
        return loss

    def run(n_steps):
        nonlocal loss
        for i in range(n_steps):
            loss = one_step(batches[i % steps])
        torch_sync(torch, device)

    t0 = time.perf_counter()
    run(2)                                      # warm-up (and compilation)
    warmup_s = time.perf_counter() - t0
    passes, times = time_repeats(lambda k: run(k * steps), epochs, repeats, min_time)
    result = timing_summary(times, passes * steps, batch_size, input_dim, latent_dim)
    result.update(
        library=f"torch {torch.__version__}", precision=precision,
        compiled=compile, adam=adam_kind, warmup_s=warmup_s,
        final_loss=float(loss.detach()), **torch_device_report(torch, device))
    return result


# ----------------------------------------------------------------- timing
def time_repeats(run, units, repeats, min_time=0.0, max_scale=1000):
    """Best-of-`repeats` timing of `run(units)`; returns `(units, seconds list)`.

    `run(k)` does `k` units of work (epochs, passes over the batches) and
    returns when the device is done. If `min_time > 0` and one timing takes
    less, `units` is scaled up (at most `max_scale` times) so that a timing
    lasts about `min_time`, and the timings start over.
    """
    times = []
    while len(times) < repeats:
        t0 = time.perf_counter()
        run(units)
        elapsed = time.perf_counter() - t0
        if min_time > 0 and not times and elapsed < min_time and max_scale > 1:
            scale = min(max_scale, math.ceil(min_time / max(elapsed, 1e-6)))
            units, max_scale = units * scale, 1
            continue
        times.append(elapsed)
    return units, times


def flops_per_step(batch, input_dim, latent_dim, matmuls):
    return matmuls * 2.0 * batch * input_dim * latent_dim


def timing_summary(times, steps, batch_size, input_dim, latent_dim):
    """Samples/s, ms/step and GFLOP/s of the best and median timing."""
    best, median = min(times), statistics.median(times)
    flops = lambda mm: flops_per_step(batch_size, input_dim, latent_dim, mm)  # noqa: E731
    return {
        "steps_per_timing": steps,
        "samples_per_timing": steps * batch_size,
        "times_s": times,
        "best_s": best,
        "samples_per_s": steps * batch_size / best,
        "median_samples_per_s": steps * batch_size / median,
        "ms_per_step": 1000.0 * best / steps,
        "gflops_7mm": flops(FORWARD_MATMULS + BACKWARD_MATMULS) * steps / best / 1e9,
        "gflops_8mm": flops(GRAPH_MATMULS) * steps / best / 1e9,
    }


def memory_estimate(input_dim, latent_dim, batch_size, precision="float32"):
    """Bytes a step needs at least, by part (an estimate, not a measurement).

    weights: the float32 parameters; adam: two float32 moments per parameter;
    gradients: one float32 gradient per parameter; activations: about eight
    `(batch, latent_dim)` tensors at the compute width (forward: projection,
    gate mask, magnitude, latents, relu(gate); backward: their gradients,
    not all alive at once) plus a few `(batch, input_dim)` float32 ones.
    """
    n_params = 2 * input_dim * latent_dim + 3 * latent_dim + input_dim
    width = 2 if precision == "bfloat16" else 4
    parts = {
        "weights": 4 * n_params,
        "adam": 8 * n_params,
        "gradients": 4 * n_params,
        "activations": 8 * batch_size * latent_dim * width
        + 6 * batch_size * input_dim * 4,
    }
    parts["total"] = sum(parts.values())
    return parts
