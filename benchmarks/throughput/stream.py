"""Does streaming from an ActivationStore keep up with training?

    python -m benchmarks.throughput.stream [--rows 65536] [--input-dim 512] [--latent-dim 4096]

Side by side in one run, for the same gated SAE and batch size:
  1. the store's tf.data stream alone (rows/s it can deliver),
  2. fit on an in-memory numpy array (the ceiling),
  3. fit streaming the store (float16 shards),
  4. fit streaming the store (float32 shards).
If (3) and (4) are close to (2), the stream keeps up; (1) far above (2) says
why. Prints a Markdown table.
"""

from benchmarks import quiet_logs  # noqa: F401 - first: before keras

import argparse
import os
import tempfile
import time

import keras
import numpy as np

import gated_sae_layers as gsl
from benchmarks.common import machine_info, markdown_table
from gated_sae_layers.activations import ActivationStore, store_dataset


def _model(args):
    model = gsl.build_gated_sae(args.input_dim, args.latent_dim, 1e-3)
    model.compile(optimizer=keras.optimizers.Adam(1e-4, beta_1=0.0), jit_compile=True)
    return model


def _time_fit(model, data, epochs, **fit_kwargs):
    model.fit(data, epochs=1, verbose=0, **fit_kwargs)  # compile and warm up
    start = time.perf_counter()
    model.fit(data, epochs=epochs, verbose=0, **fit_kwargs)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--input-dim", type=int, default=512)
    parser.add_argument("--latent-dim", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--shard-rows", type=int, default=16384)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    data = np.random.default_rng(0).normal(size=(args.rows, args.input_dim)).astype("float32")
    folder = tempfile.mkdtemp()
    stores = {}
    for dtype in ("float16", "float32"):
        store = ActivationStore.create(os.path.join(folder, dtype), args.input_dim, dtype,
                                       args.shard_rows)
        store.append(data)
        store.close()
        stores[dtype] = ActivationStore.open(os.path.join(folder, dtype))

    results = []
    dataset = store_dataset(stores["float16"], args.batch_size, seed=0)
    for _ in dataset:  # warm up the pipeline and the checksum pass
        pass
    start = time.perf_counter()
    for _ in range(args.epochs):
        for _ in dataset:
            pass
    results.append(("store stream alone (float16)", args.rows * args.epochs /
                    (time.perf_counter() - start)))
    seconds = _time_fit(_model(args), data, args.epochs, batch_size=args.batch_size)
    results.append(("fit, in-memory numpy", args.rows * args.epochs / seconds))
    for dtype, store in stores.items():
        seconds = _time_fit(_model(args), store_dataset(store, args.batch_size, seed=0),
                            args.epochs)
        results.append((f"fit, streaming the store ({dtype})", args.rows * args.epochs / seconds))

    print(f"Gated SAE {args.input_dim} -> {args.latent_dim}, batch {args.batch_size}, "
          f"{args.rows} rows in shards of {args.shard_rows}, {args.epochs} timed epochs, "
          f"{machine_info()['cpu_count']} CPUs\n")
    ceiling = results[1][1]
    print(markdown_table(["what", "rows/s", "vs in-memory fit"],
                         [[name, f"{rate:,.0f}", f"{rate / ceiling:.2f}x"]
                          for name, rate in results]))


if __name__ == "__main__":
    main()
