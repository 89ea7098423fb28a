"""`python -m benchmarks.throughput --verify`: ours against the references, same math?

Each configuration of `VERIFY_CONFIGS` trains 3 Adam steps of a tiny gated
SAE from the same weights (`ref.init_params`) and batches in a worker
process (`verify_config`); `verify_main` prints the largest weight
difference of each to the hand-written JAX step. Differences far below one
Adam step (the learning rate) mean the same math.
"""

import json

import numpy as np

from benchmarks.common import markdown_table
from benchmarks.throughput import reference_steps as ref
from benchmarks.throughput.configs import CONFIGS
from benchmarks.throughput.parent import public_args, spawn
from benchmarks.throughput.workers import build_kit_sae

VERIFY_CONFIGS = ("hand-jax", "jax", "tf", "tf-xla", "torch", "torch-compile")


def _hand_jax(config, params, x, args):
    import jax

    step = jax.jit(ref.make_jax_step(config.precision, args.remove_parallel_gradient))
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    state = [params, zeros, dict(zeros), np.float32(0.0)]
    for i in range(3):
        *state, _ = step(*state, x[i * args.batch_size:(i + 1) * args.batch_size])
    return {k: np.asarray(v) for k, v in state[0].items()}


def _torch(config, params, x, args):
    import torch

    sae = ref.make_torch_sae(args.input_dim, args.latent_dim, "cpu",
                             config.precision, seed=1)
    optimizer, _ = ref.torch_adam(torch, sae.parameters())
    loss_fn = torch.compile(sae) if config.options["compile"] else sae
    for batch in torch.from_numpy(x).split(args.batch_size):
        optimizer.zero_grad()
        loss_fn(batch).backward()
        if args.remove_parallel_gradient:
            with torch.no_grad():
                w, g = sae.W_dec, sae.W_dec.grad
                g.sub_((g * w).sum(-1, keepdim=True)
                       / ((w * w).sum(-1, keepdim=True) + ref.PARALLEL_EPSILON) * w)
        optimizer.step()
        with torch.no_grad():
            sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True)
                           .clamp_min_(ref.NORM_EPSILON))
    return {k: v.detach().numpy() for k, v in sae.named_parameters()}


def _ours(config, params, x, args):
    import keras

    model = build_kit_sae(args, config.options["jit"])
    encoder, decoder = model.encoder, model.decoder
    variables = {"W_gate": encoder.gate_kernel, "b_gate": encoder.gate_bias,
                 "r_mag": encoder.magnitude_log_scale,
                 "b_mag": encoder.magnitude_bias, "W_dec": decoder.kernel,
                 "b_dec": decoder.bias}
    for key, variable in variables.items():
        variable.assign(params[key])
    model.fit(x, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    return {k: keras.ops.convert_to_numpy(v) for k, v in variables.items()}


def verify_config(name, args):
    """Trains 3 steps of a tiny SAE from `ref.init_params`; returns the weights."""
    params = ref.init_params(args.input_dim, args.latent_dim, seed=1)
    x = ref.random_batches(3, args.batch_size, args.input_dim, seed=2)
    config = CONFIGS[name]
    if config.family == "hand-jax":
        out = _hand_jax(config, params, x, args)
    elif config.family == "torch":
        out = _torch(config, params, x, args)
    elif config.kind == "ours":
        out = _ours(config, params, x, args)
    else:
        raise ValueError(f"--verify covers {', '.join(VERIFY_CONFIGS)}; got {name!r}")
    moved = {k: float(np.max(np.abs(out[k] - params[k]))) for k in params}
    return {"weights": {k: v.tolist() for k, v in out.items()},
            "max_update": moved}


def verify_main(args):
    configs = [c for c in args.config_list if c in VERIFY_CONFIGS] or list(VERIFY_CONFIGS)
    if "hand-jax" not in configs:
        configs.insert(0, "hand-jax")
    print(f"# Same-math check: 3 Adam steps of a {args.input_dim} -> "
          f"{args.latent_dim} gated SAE, batch {args.batch_size}, float32, "
          f"remove_parallel_gradient={args.remove_parallel_gradient}, from the "
          "same weights and batches")
    results = {}
    for name in configs:
        results[name] = spawn([name], args, dict(input_dim=args.input_dim,
                                                 latent_dim=args.latent_dim,
                                                 batch_size=args.batch_size))[0]
    base = results["hand-jax"]
    if "error" in base or "skipped" in base:
        print(f"hand-jax failed: {base.get('error') or base.get('skipped')}")
        return 1
    keys = list(base["weights"])
    print("\nLargest |w - w_hand-jax| after 3 steps (an Adam step moves a weight "
          f"by up to lr = {ref.ADAM['learning_rate']:g}):\n")
    rows = [["hand-jax (moved by)"] + [f"{base['max_update'][k]:.2e}" for k in keys]
            + ["reference"]]
    status = 0
    for name, r in results.items():
        if name == "hand-jax":
            continue
        if "error" in r or "skipped" in r:
            rows.append([name] + ["-" for _ in keys]
                        + [f"{'skipped' if 'skipped' in r else 'FAILED'}: "
                           f"{(r.get('error') or r.get('skipped'))[:120]}"])
            continue
        diffs = {k: float(np.max(np.abs(np.asarray(r["weights"][k])
                                        - np.asarray(base["weights"][k]))))
                 for k in keys}
        # Same math: differences far below one Adam step (1e-4). PyTorch's
        # Adam puts epsilon after the bias correction, so allow a little more.
        ok = max(diffs.values()) < 0.1 * ref.ADAM["learning_rate"]
        status |= not ok
        rows.append([name] + [f"{diffs[k]:.1e}" for k in keys]
                    + ["same math" if ok else "DIFFERS"])
    print(markdown_table(["config"] + keys + ["verdict"], rows,
                         align="l" + "r" * len(keys) + "l"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"verify": results, "args": public_args(args)}, f)
    return status
