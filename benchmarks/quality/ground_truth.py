"""Ground-truth feature recovery: which SAE variant finds a known dictionary?

    python -m benchmarks.quality.ground_truth            # default size, a few minutes on 2 cores
    python -m benchmarks.quality.ground_truth --large    # d=128, 512 true features, longer training

Data (the "toy model of superposition" recipe of Sharkey et al. 2022 and the
SAE literature, with realistic frequency and magnitude spread):

* `n_true` true feature directions: i.i.d. Gaussian vectors in R^d normalized
  to unit length (not orthogonal: n_true > d, so the features are in
  superposition).
* Feature i fires independently with probability p_i proportional to
  (i + 1)^-alpha (a power law; alpha = 0.5 by default), scaled so that the
  expected number of active features per example is `--target-l0` (5).
  Default: p from 0.16 (most frequent) down to 0.010 (rarest).
* An active feature's magnitude is lognormal(0, sigma) (sigma = 0.5: median
  1, 90% between 0.44 and 2.3); x = sum_i a_i d_i + N(0, noise^2 I) with
  noise = 0.01 per coordinate.
* 50,000 training rows, 10,000 held-out rows (the default size).

Training (identical budget for every variant): `latent_dim` = 2 x n_true,
`--steps` optimizer steps (6,000; 20,000 with --large) of batch 256 over shuffled passes of the training
rows, Adam(beta_1=0) with a 5% linear warm-up then cosine decay from
`--lr`, `b_dec` initialized at the data mean, a linear sparsity-coefficient
warm-up over the first 10% of steps for the penalty variants (gated, relu,
jumprelu), `jit_compile=True`. Each variant gets a small sweep of its
sparsity knob (`--grid`); k-budget variants get k = the true mean L0 and
k_aux = d / 2 (Gao et al.'s d_model / 2). JumpReLU gets bandwidth 0.05 and
initial threshold 0.1 (`--jumprelu-bandwidth`, `--jumprelu-threshold`):
with the kit defaults (1e-3, 1e-3) its thresholds hardly move in this
budget and L0 stays above 80 whatever the coefficient.

Scores, per trained SAE: the decoder rows (unit norm) against the true
directions: MMCS = mean over true features of the max cosine to any decoder
row; `recovered@0.9` = the fraction of true features with such a cosine
above 0.9 (also for the rarest half of the features); and on held-out rows
L0, FVU, dead latents, shrinkage. The headline row per variant is the sweep
point with the highest recovered@0.9 (ties: higher MMCS); all rows are kept.

Prints a Markdown table, writes `benchmarks/figures/ground_truth[_large].png`
and `benchmarks/figures/ground_truth[_large].json`.
"""

import argparse
import sys
import time

import numpy as np

from benchmarks.common import (
    column_table, figures_dir, framework_versions, machine_info, machine_summary,
    write_json)
from benchmarks.quality import sweep as vs

DEFAULT_GRID = {
    "gated": [1.0, 2.0],
    "relu": [1.0, 2.0],
    "jumprelu": [0.1, 0.3],
    "topk": [5],
    "batch_topk": [5],
    "matryoshka": [5],
}


def make_data(d, n_true, target_l0, alpha, magnitude_sigma, noise, n_rows, seed):
    """Rows of sparse combinations of known unit directions; returns (x, directions, p, active)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_true, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    p = (np.arange(n_true) + 1.0) ** -alpha
    p *= target_l0 / p.sum()
    if p.max() > 1:
        raise ValueError("target_l0 too large for this alpha and n_true")
    x = np.empty((n_rows, d), "float32")
    active_counts = np.zeros(n_true, "int64")
    l0 = np.empty(n_rows)
    chunk = 10000
    for start in range(0, n_rows, chunk):
        m = min(chunk, n_rows - start)
        active = rng.random((m, n_true)) < p
        magnitudes = rng.lognormal(0.0, magnitude_sigma, size=(m, n_true))
        codes = active * magnitudes
        x[start:start + m] = codes @ directions + noise * rng.normal(size=(m, d))
        active_counts += active.sum(axis=0)
        l0[start:start + m] = active.sum(axis=1)
    return x, directions, p, active_counts, l0


def make_hierarchical_data(d, n_parents, children_per_parent, target_l0, alpha,
                           child_probability, parent_share, magnitude_sigma, noise,
                           n_rows, seed):
    """Rows of a feature hierarchy: children fire only with their parent.

    The hard case for an SAE (feature absorption, Chanin et al. 2024): a
    child never fires without its parent, so a latent that decodes "parent +
    child" explains both with one active latent, and the child's direction
    shares `parent_share` of its parent's (cosine about `parent_share /
    sqrt(parent_share^2 + 1)`), so the dictionary is far from orthogonal.

    Parent i fires with probability p_i ∝ (i + 1)^-alpha; given its parent
    fires, each child fires independently with `child_probability`; p is
    scaled so that the expected L0 (parents and children) is `target_l0`.
    Magnitudes lognormal(0, sigma), noise `noise` per coordinate.

    Returns (x, directions, p, active_counts, l0) as `make_data`; the
    directions are ordered parents first, then children (`parent * c + j`).
    """
    rng = np.random.default_rng(seed)
    parents = rng.normal(size=(n_parents, d))
    parents /= np.linalg.norm(parents, axis=1, keepdims=True)
    children = rng.normal(size=(n_parents, children_per_parent, d)) / np.sqrt(d)
    children = children / np.linalg.norm(children, axis=2, keepdims=True)
    children = children + parent_share * parents[:, None, :]
    children /= np.linalg.norm(children, axis=2, keepdims=True)
    directions = np.concatenate([parents, children.reshape(-1, d)])
    p_parent = (np.arange(n_parents) + 1.0) ** -alpha
    p_parent *= target_l0 / (1 + children_per_parent * child_probability) / p_parent.sum()
    if p_parent.max() > 1:
        raise ValueError("target_l0 too large for this alpha and n_parents")
    p = np.concatenate([p_parent, np.repeat(p_parent * child_probability,
                                            children_per_parent)])
    x = np.empty((n_rows, d), "float32")
    active_counts = np.zeros(len(directions), "int64")
    l0 = np.empty(n_rows)
    chunk = 10000
    for start in range(0, n_rows, chunk):
        m = min(chunk, n_rows - start)
        parent_on = rng.random((m, n_parents)) < p_parent
        child_on = (rng.random((m, n_parents, children_per_parent)) < child_probability
                    ) & parent_on[:, :, None]
        active = np.concatenate([parent_on, child_on.reshape(m, -1)], axis=1)
        magnitudes = rng.lognormal(0.0, magnitude_sigma, size=active.shape)
        codes = active * magnitudes
        x[start:start + m] = codes @ directions + noise * rng.normal(size=(m, d))
        active_counts += active.sum(axis=0)
        l0[start:start + m] = active.sum(axis=1)
    return x, directions, p, active_counts, l0


def recovery(model, directions, threshold=0.9):
    weights = np.asarray(model.decoder.kernel, "float64")
    weights = weights / np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-12)
    best = (directions @ weights.T).max(axis=1)          # per true feature
    half = len(best) // 2
    return {
        "mmcs": float(best.mean()),
        "recovered": float((best > threshold).mean()),
        "recovered_rare_half": float((best[half:] > threshold).mean()),
        "max_cos": best.tolist(),
    }


def plot(results, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in results["headline"]:
        cos = np.asarray(row["max_cos"])
        axes[0].plot(np.arange(len(cos)), cos, ".", ms=3,
                     label=f"{row['architecture']} ({row['knob']}={row['hyper']}): "
                           f"{row['recovered']:.0%}")
    axes[0].axhline(0.9, color="k", lw=0.8, ls="--")
    axes[0].set_xlabel("true feature (sorted by frequency, most frequent first)")
    axes[0].set_ylabel("max cosine to a decoder row")
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(fontsize=7, loc="lower left")
    axes[0].set_title("recovery per true feature (headline run per variant)")
    names = [r["architecture"] for r in results["headline"]]
    xs = np.arange(len(names))
    axes[1].bar(xs - 0.2, [r["recovered"] for r in results["headline"]], 0.4,
                label="recovered@0.9 (all)")
    axes[1].bar(xs + 0.2, [r["recovered_rare_half"] for r in results["headline"]], 0.4,
                label="recovered@0.9 (rarest half)")
    axes[1].plot(xs, [r["mmcs"] for r in results["headline"]], "kD", label="MMCS")
    axes[1].axhline(0.95, color="r", lw=0.8, ls="--", label="95%")
    axes[1].set_xticks(xs, names, rotation=20)
    axes[1].set_ylim(0, 1.05)
    axes[1].legend(fontsize=7, loc="lower left")
    axes[1].set_title("headline run per variant")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true",
                        help="d=128, n_true=512, 200k rows, 20k steps")
    parser.add_argument("--d", type=int)
    parser.add_argument("--n-true", type=int)
    parser.add_argument("--latent-factor", type=float, default=2.0)
    parser.add_argument("--target-l0", type=float, default=5.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--magnitude-sigma", type=float, default=0.5)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--train-rows", type=int)
    parser.add_argument("--test-rows", type=int, default=10000)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-3)
    vs.add_sweep_arguments(
        parser, jumprelu_bandwidth=(0.05, "JumpReLU pseudo-derivative bandwidth "
                                    "(kit default 1e-3 does not sparsify at this "
                                    "budget and data scale)"),
        jumprelu_threshold=(0.1, "JumpReLU initial threshold (kit default 1e-3)"))
    args = parser.parse_args(argv)
    if args.replot:
        return vs.replot(args.replot, lambda results, png: plot(
            results, png, results.get("title", "")))
    architectures = vs.parse_architectures(args.architectures, parser)

    d = args.d or (128 if args.large else 64)
    n_true = args.n_true or (512 if args.large else 256)
    train_rows = args.train_rows or (200000 if args.large else 50000)
    steps = args.steps or (20000 if args.large else 6000)
    latent_dim = int(round(args.latent_factor * n_true))
    grid = dict(DEFAULT_GRID)
    grid.update(vs.parse_grid(args.grid))
    stem = "ground_truth" + ("_large" if args.large else "") + (
        f"_{args.tag}" if args.tag else "")
    figures = figures_dir()

    x, directions, p, counts, true_l0 = make_data(
        d, n_true, args.target_l0, args.alpha, args.magnitude_sigma, args.noise,
        train_rows + args.test_rows, args.seed)
    x_train, x_test = x[:train_rows], x[train_rows:]
    info = {**machine_info(), **framework_versions()}
    print(f"# Ground-truth recovery ({machine_summary(info)})")
    print(f"data: d={d}, n_true={n_true}, power-law alpha={args.alpha} "
          f"(p {p.max():.3f}..{p.min():.4f}), true L0 {true_l0.mean():.2f}, "
          f"lognormal(0,{args.magnitude_sigma}) magnitudes, noise {args.noise}; "
          f"{train_rows} train / {args.test_rows} test rows; rarest feature fires "
          f"{counts[-1]} times in all rows")
    print(f"training: latent_dim={latent_dim}, {steps} steps x batch {args.batch_size} "
          f"(~{steps * args.batch_size / train_rows:.0f} epochs), Adam(beta_1=0) "
          f"peak lr {args.lr}, warm-up 5% + cosine; sparsity warm-up 10%")

    extra = {"jumprelu": {k: v for k, v in (
        ("bandwidth", args.jumprelu_bandwidth),
        ("initial_threshold", args.jumprelu_threshold)) if v is not None}}
    start = time.perf_counter()
    rows = vs.sweep(
        {arch: grid.get(arch, [args.target_l0]) for arch in architectures},
        x_train, x_test, latent_dim, score=lambda model: recovery(model, directions),
        summary=lambda row: (
            f"recovered {row['recovered']:.1%} MMCS {row['mmcs']:.3f} "
            f"L0 {row['l0']:.2f} FVU {row['fvu']:.3f} ({row['train_seconds']} s)"),
        partial_path=figures / f"{stem}.partial.json", builder_kwargs=extra,
        steps=steps, batch_size=args.batch_size, peak_lr=args.lr, seed=args.seed)

    headline = []
    for arch in architectures:
        ok = [r for r in rows if r["architecture"] == arch and "error" not in r]
        if ok:
            headline.append(max(ok, key=lambda r: (r["recovered"], r["mmcs"])))
    total = time.perf_counter() - start

    columns = [("variant", "architecture", "s"), ("knob", "knob", "s"),
               ("value", "hyper", "g"), ("recovered@0.9", "recovered", ".1%"),
               ("rarest half @0.9", "recovered_rare_half", ".1%"),
               ("MMCS", "mmcs", ".3f"), ("L0 (test)", "l0", ".2f"),
               ("FVU (test)", "fvu", ".3f"), ("shrinkage", "shrinkage", ".3f"),
               ("dead", "dead", "d"), ("train s", "train_seconds", ".0f")]
    print(f"\nTrue L0 = {true_l0.mean():.2f}; latent_dim = {latent_dim}; "
          f"{steps} steps x {args.batch_size} for every run; total {total:.0f} s\n")
    print("Headline (best recovered@0.9 of each variant's sweep):\n")
    print(column_table(headline, columns))
    print("\nAll runs:\n")
    print(column_table([r for r in rows if "error" not in r], columns))
    vs.print_failures(rows)

    results = {
        "command": "python -m benchmarks.quality.ground_truth " + " ".join(argv or sys.argv[1:]),
        "machine": info, "seconds": round(total, 1),
        "data": {"d": d, "n_true": n_true, "alpha": args.alpha,
                 "target_l0": args.target_l0, "true_l0": float(true_l0.mean()),
                 "p_max": float(p.max()), "p_min": float(p.min()),
                 "magnitudes": f"lognormal(0, {args.magnitude_sigma})",
                 "noise": args.noise, "train_rows": train_rows,
                 "test_rows": args.test_rows, "seed": args.seed},
        "training": {"latent_dim": latent_dim, "steps": steps,
                     "batch_size": args.batch_size, "peak_lr": args.lr,
                     "optimizer": "Adam(beta_1=0), 5% warm-up + cosine decay",
                     "sparsity_warmup": "10% of steps (penalty variants)"},
        "rows": rows, "headline": headline,
        "title": (f"Ground truth: d={d}, {n_true} true features (power law "
                  f"{args.alpha}, true L0 {true_l0.mean():.1f}), latent {latent_dim}, "
                  f"{steps} steps x {args.batch_size}"),
    }
    json_path = figures / f"{stem}.json"
    write_json(json_path, results, indent=1)
    png_path = figures / f"{stem}.png"
    try:
        plot(results, png_path, results["title"])
    except ImportError as error:  # no matplotlib (e.g. a bare accelerator image)
        print(f"no plot ({error}); later: python -m benchmarks.quality.ground_truth "
              f"--replot {json_path}")
    (figures / f"{stem}.partial.json").unlink(missing_ok=True)
    print(f"\nfigure: {png_path}\njson: {json_path}")
    return results


if __name__ == "__main__":
    main()
