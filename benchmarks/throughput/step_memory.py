"""Device memory of the kit's compiled training loop, from XLA's buffer assignment.

Compiles (does not run), through `gsl.train_step_memory`, the loop that `SparseAutoencoder.fit` runs on JAX
for a gated SAE of the given size, and prints XLA's own account of its
memory next to the analytic floor:

    weights (W_gate, W_dec and the per-latent vectors) + Adam's two slots
    + one gradient of every weight + the (batch, latent_dim) activations

`--policy mixed_bfloat16` compiles the mixed-precision step (float32
weights and optimizer, bfloat16 activations). On a machine without a GPU
this is XLA:CPU's buffer assignment: the GPU compiler fuses differently,
so read it as an estimate of the GPU's peak, which `python -m
benchmarks.throughput` measures on the device itself.

Usage:

    KERAS_BACKEND=jax python -m benchmarks.throughput.step_memory 2304 131072 --batch 4096 \
        --policy mixed_bfloat16
"""

from benchmarks import jax_backend  # noqa: F401 - first: JAX by default

import argparse

from benchmarks.common import GIB


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input_dim", type=int)
    parser.add_argument("latent_dim", type=int)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--policy", default="float32")
    args = parser.parse_args()

    import jax
    import numpy as np
    import keras

    import gated_sae_layers as gsl

    keras.config.set_dtype_policy(args.policy)
    model = gsl.build_gated_sae(args.input_dim, args.latent_dim, 1e-3)
    model.compile(keras.optimizers.Adam(1e-4))
    chunk_rows = 4 * args.batch
    memory = gsl.train_step_memory(model, args.batch, chunk_rows)
    seconds = memory["compile_seconds"]

    weights = sum(int(np.prod(v.shape)) * 4 for v in model.trainable_variables)
    compute_bytes = 2 if "16" in args.policy else 4
    activations = args.batch * args.latent_dim * compute_bytes
    chunk = chunk_rows * args.input_dim * 4
    print(f"gated SAE {args.input_dim} -> {args.latent_dim}, batch {args.batch}, "
          f"policy {args.policy}, backend {jax.default_backend()} "
          f"(compiled in {seconds:.0f} s)")
    print(f"  weights (float32)              {weights / GIB:8.2f} GiB")
    print(f"  Adam slots (2 x weights)       {2 * weights / GIB:8.2f} GiB")
    print(f"  one (batch, latents) tensor    {activations / GIB:8.2f} GiB")
    print(f"  data chunk in this compile     {chunk / GIB:8.2f} GiB")
    print("  XLA buffer assignment:")
    for name in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes"):
        print(f"    {name:28s} {memory[name] / GIB:8.2f} GiB")
    print("  peak = arguments + outputs - aliased + temporaries: "
          f"{memory['peak_bytes'] / GIB:.2f} GiB")
    print(f"  temporaries / (batch, latents) tensor: "
          f"{memory['temp_bytes'] / activations:.1f}")


if __name__ == "__main__":
    main()
