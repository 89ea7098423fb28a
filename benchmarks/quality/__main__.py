"""Training quality of our gated SAE against the peers', at equal budget (issue 10).

    python -m benchmarks.quality --quick                  # smoke run, ~2 minutes
    python -m benchmarks.quality                          # peers, all three datasets, 2 seeds
    python -m benchmarks.quality --study candidates       # issue 23: default candidates
    python -m benchmarks.quality --study recipe           # our gated recipe, 2 seeds
    python -m benchmarks.quality --study ablation --seeds 0
    python -m benchmarks.quality --datasets synthetic --seeds 0 --resume

Run from the repository root; the Keras backend is JAX unless
`KERAS_BACKEND` says otherwise (the fastest on a CPU). Needs the MiniLM
activations harvested once by `python -m benchmarks.quality.minilm_activations`.

Datasets (held-out rows score every run):

* `synthetic`: the hard ground-truth instance: 512 true unit directions in
  R^64 (i.i.d. Gaussian, normalized: 8x overcomplete, in superposition),
  feature i fires with probability p_i ∝ (i+1)^-0.5 scaled to 6 active per
  row on average, magnitudes lognormal(0, 0.5), noise 0.01 per coordinate
  (`ground_truth.make_data`); 50,000 train / 10,000 held-out rows; the data
  seed is the run seed, so each seed is a new dictionary. 1,024 latents,
  2,940 steps x 256 (15 epochs), peak lr 5e-3.
* `hierarchy` (issue 23: features not orthogonal enough to be easy): 256
  parent directions in R^128, each with 3 children whose directions share
  0.6 cosine with it (`ground_truth.make_hierarchical_data`); a child fires
  only when its parent fires (w.p. 0.35), so one latent can absorb a
  parent into a child (feature absorption); parents fire with p ∝
  (i+1)^-0.5, 8 active per row on average, lognormal(0, 0.5) magnitudes,
  noise 0.01; 50,000 train / 10,000 held-out rows, data seed = run seed.
  2,048 latents, 2,940 steps x 256, peak lr 5e-3. Scored like `synthetic`,
  plus the fraction of the parents recovered.

`--train-rows one-pass` gives both ground-truth sets steps x batch training
rows, each seen once (the issue-23 runs): with 50,000 rows seen 15 times the
SAEs fit the rows' noise, and held-out shrinkage rose above 1.
* `minilm`: all-MiniLM-L6-v2 residual stream after block 3 on stdlib
  docstrings (`pareto.load_dataset("minilm")`: 54,000 train / 6,000 held-out
  tokens, scaled so that E||x||^2 = 384). 768 latents, 1,200 steps x 256
  (~6 epochs), peak lr 3e-3.

Budget, identical for every trainer: the same rows in the same order, the
same steps and batch size, Adam(beta_1=0, beta_2=0.999), the same peak lr,
a 5% linear lr warm-up and a 10% linear sparsity-coefficient warm-up.
Everything else is each trainer's own (see `benchmarks/quality/peers.py`).

Studies (`--study`):

* `peers` (default): our gated SAE with the kit's default recipe
  (`OURS_DEFAULT`: `WarmupStableDecay`, linear decay over the last 20%;
  decoder-parallel gradient removed; `b_dec` at the data mean; `W_gate`
  initialized at 0.1 x `W_dec^T`, the builder's default since this study;
  `W_dec` stepped 5x as far at first, falling to 1x, since issue 23) and
  without that multiplier (`OURS_BEST`), our TopK (k = the
  target L0, same schedule), `dictionary_learning`'s `GatedSAETrainer`
  (constant lr after warm-up, as shipped) and SAELens's `GatedTrainingSAE`
  + `SAETrainer` (its `"constant"` schedule). `--extra` adds each peer
  with its own linear decay over the same last 20% (dictionary_learning's
  `decay_start`, SAELens's `lr_decay_steps`); ours with a global gradient
  clip norm of 1; ours with the aux term training the decoder; and ours
  with SAELens's choices (`build_gated_sae(aux_trains_decoder=True,
  weight_by_decoder_norm=True)`), without and with SAELens's global clip
  norm of 1 (its `SAETrainer` clips every step).
* `recipe`: our gated SAE only: the README recipe (`WarmupCosineDecay` to
  0, tied `W_gate = W_dec^T`), then with `W_gate` at 0.1 x `W_dec^T`: schedule
  `cosine` / `constant` (`WarmupStableDecay(decay_fraction=0)`) / `wsd`
  (`WarmupStableDecay`, 20%), each with and without
  `remove_parallel_gradient=True`; `b_dec` at the mean / zero / geometric
  median; and the aux term training the decoder (SAELens's choice).
* `candidates` (issue 23): the earlier default (`OURS_BEST`, the paper's
  constant step for `W_dec`) against candidates that keep its unit-norm
  decoder: `W_dec` stepped 2-10x as far as the other weights
  (`decoder_lr_multiplier`: the angular speed SAELens's rows get from
  starting at norm 0.1), constant or falling to 1x (by the last step or by
  mid-run), the aux term training `W_dec` (throughout, or only over the first
  25% or 50% of the steps), both, and dead latents resampled.
* `ablation`: what makes SAELens's gated SAE recover more directions than
  ours (seed 0): our init scale (x1, x0.3, x0.1, x0.03) and aux term
  (frozen decoder, as the paper, or trained); SAELens with its aux term
  detached (as the paper) or with unit-norm initial decoder rows.

Each gated trainer runs a sweep of its sparsity coefficient (`--grid`);
the scores are read at matched L0 (`--targets`): interpolated linearly in
log L0 between the two sweep points that bracket the target (blank when
the sweep does not bracket it). Scores: synthetic, hierarchy: recovered@0.9 (the
fraction of true directions whose best decoder row has cosine > 0.9),
MMCS (mean over true directions of that best cosine); MiniLM: FVU and
shrinkage gamma = E||x_hat||^2 / E[x_hat . x]; both: L0 and dead latents on
the held-out rows.

Peers (each optional; a missing one is reported as skipped, with how to
install it; on a CPU-only machine):

    pip install torch --index-url https://download.pytorch.org/whl/cpu
    pip install sae-lens
    pip install --no-deps dictionary-learning einops

`import dictionary_learning` needs `nnsight` (its activation buffer); the
benchmark loads the package without running its `__init__` when `nnsight`
is missing, as `benchmarks/throughput/peers.py` does.

Prints Markdown tables (all runs; matched-L0 summary per seed and mean),
writes `benchmarks/figures/quality_<study>[_tag].json` (rows kept after
every run: `--resume` continues an interrupted run) and `.png`.
"""

from benchmarks import jax_backend  # noqa: F401 - first: JAX by default
from benchmarks import torch_first  # noqa: F401 - before TensorFlow loads

import argparse
import pathlib
import sys
import time

import numpy as np

from benchmarks.common import (
    column_table, figures_dir, framework_versions, machine_info, machine_summary,
    markdown_table, write_json)
from benchmarks.quality import peers as qp

SIZES = {  # dataset -> (latent_dim, steps, batch_size, peak_lr)
    ("synthetic", False): (1024, 2940, 256, 5e-3),
    ("minilm", False): (768, 1200, 256, 3e-3),
    ("synthetic", True): (256, 300, 128, 5e-3),     # --quick
    ("minilm", True): (256, 150, 256, 3e-3),
    ("hierarchy", False): (2048, 2940, 256, 5e-3),
    ("hierarchy", True): (512, 300, 128, 5e-3),
}
TARGETS = {"synthetic": [6.0], "minilm": [16.0, 32.0], "hierarchy": [8.0]}
GROUND_TRUTH = ("synthetic", "hierarchy")   # datasets scored against known directions
HIERARCHY = {False: (128, 256, 8.0), True: (64, 64, 6.0)}  # quick -> (d, parents, L0)
GRIDS = {  # the sparsity coefficient sweep of each gated trainer
    ("synthetic", "ours_gated"): [1.25, 1.75, 2.5],
    ("synthetic", "dictionary_learning"): [1.25, 1.75, 2.5],
    ("synthetic", "saelens"): [0.6, 0.8, 1.1],
    ("minilm", "ours_gated"): [1.5, 3.0, 6.0],
    ("minilm", "dictionary_learning"): [1.5, 3.0, 6.0],
    ("minilm", "saelens"): [0.75, 1.5, 3.0],
    ("hierarchy", "ours_gated"): [0.6, 0.8, 1.05],
    ("hierarchy", "dictionary_learning"): [0.6, 0.8, 1.1],
    ("hierarchy", "saelens"): [0.45, 0.6, 0.8],
}
WARMUP_FRACTION, SPARSITY_WARMUP_FRACTION, DECAY_FRACTION = 0.05, 0.1, 0.2

# The recommended recipe (from the `recipe` study; see benchmarks/quality/RESULTS.md).
OURS_BEST = {"schedule": "wsd", "remove_parallel_gradient": True, "b_dec": "mean",
             "encoder_init_scale": 0.1,
             "grid": {"synthetic": [0.75, 1.0, 1.35], "minilm": [1.5, 3.0, 6.0]}}
# The kit's default recipe since issue 23: `OURS_BEST` with W_dec stepped 5x
# as far at the first step, falling to 1x at the last (`gsl.falling_multiplier`).
FAST_DECODER_GRID = {"synthetic": [0.75, 1.0, 1.35, 1.8], "hierarchy": [0.7, 0.9, 1.2],
                     "minilm": [1.5, 3.0, 6.0]}   # it fires more latents per lambda
OURS_DEFAULT = {**OURS_BEST, "decoder_lr_decaying_from": 5.0, "grid": FAST_DECODER_GRID}

PEER_CONTENDERS = [  # (label, trainer, kwargs)
    ("ours gated (default: wsd, rpg, W_gate x0.1, W_dec lr x5 falling to x1)",
     "ours_gated", OURS_DEFAULT),
    ("ours gated (wsd, rpg, W_gate x0.1)", "ours_gated", OURS_BEST),
    ("ours topk (wsd)", "ours_topk", {"schedule": "wsd", "b_dec": "mean"}),
    ("dictionary_learning (constant)", "dictionary_learning", {"decay": False}),
    ("saelens (constant)", "saelens", {"decay": False}),
]
PEER_EXTRA_CONTENDERS = [  # --extra: the peers with their own linear decay, and
    # our gated SAE with the aux term training the decoder (as SAELens; not the paper)
    ("ours gated (wsd, rpg, W_gate x0.1, aux trains W_dec)", "ours_gated",
     {**OURS_BEST, "aux": "trained"}),
    ("ours gated (wsd, rpg, W_gate x0.1) + global clipnorm 1", "ours_gated",
     {**OURS_BEST, "global_clipnorm": 1.0}),
    ("ours gated, SAELens's choices (wsd, aux trains W_dec, norm-weighted free W_dec)",
     "ours_gated", {**OURS_BEST, "remove_parallel_gradient": False, "aux": "trained",
                    "free_decoder": True,
                    "grid": {"synthetic": [0.6, 0.8, 1.1], "minilm": [0.75, 1.5, 3.0]}}),
    ("ours gated, SAELens's choices + its global clipnorm 1 (wsd, aux trains W_dec, "
     "norm-weighted free W_dec)", "ours_gated",
     {**OURS_BEST, "remove_parallel_gradient": False, "aux": "trained",
      "free_decoder": True, "global_clipnorm": 1.0,
      "grid": {"synthetic": [0.45, 0.6, 0.8, 1.1], "minilm": [0.4, 0.75, 1.5, 3.0]}}),
    ("dictionary_learning (decay 20%)", "dictionary_learning", {"decay": True}),
    ("saelens (decay 20%)", "saelens", {"decay": True}),
]


def _recipe(schedule, rpg, b_dec="mean", scale=1.0, aux="frozen"):
    label = (f"{schedule}{', rpg' if rpg else ''}, W_gate x{scale:g}"
             f"{'' if b_dec == 'mean' else ', b_dec ' + b_dec}"
             f"{', aux trains W_dec' if aux == 'trained' else ''}")
    kwargs = {"schedule": schedule, "remove_parallel_gradient": rpg, "b_dec": b_dec,
              "encoder_init_scale": scale, "aux": aux}
    if scale != 1.0:
        kwargs["grid"] = {"synthetic": [0.75, 1.0, 1.35], "minilm": [1.5, 3.0, 6.0]}
    return (label, "ours_gated", kwargs)


RECIPE_CONTENDERS = [
    _recipe("cosine", False),                    # the README recipe
    _recipe("wsd", True),
    *[_recipe(schedule, rpg, scale=0.1)
      for schedule in ("cosine", "constant", "wsd") for rpg in (False, True)],
    _recipe("wsd", True, "zero", 0.1),
    _recipe("wsd", True, "median", 0.1),
    _recipe("wsd", True, scale=0.1, aux="trained"),
]
WSD_RPG = {"schedule": "wsd", "remove_parallel_gradient": True, "b_dec": "mean"}
SMALL_INIT_GRID = {"synthetic": [0.6, 0.9, 1.3], "minilm": [0.75, 1.5, 3.0]}
ABLATION_CONTENDERS = [  # what makes SAELens's gated SAE recover more directions?
    ("ours (wsd, rpg)", "ours_gated", WSD_RPG),
    ("ours (wsd, rpg), aux trains W_dec", "ours_gated", {**WSD_RPG, "aux": "trained"}),
    ("ours (wsd, rpg), W_gate init x0.1", "ours_gated",
     {**WSD_RPG, "encoder_init_scale": 0.1,
      "grid": {"synthetic": [0.6, 0.9, 1.25, 1.75, 2.5], "minilm": [0.75, 1.5, 3.0]}}),
    ("ours (wsd, rpg), W_gate init x0.1, aux trains W_dec", "ours_gated",
     {**WSD_RPG, "encoder_init_scale": 0.1, "aux": "trained", "grid": SMALL_INIT_GRID}),
    ("ours (wsd, rpg), W_gate init x0.3", "ours_gated",
     {**WSD_RPG, "encoder_init_scale": 0.3,
      "grid": {"synthetic": [0.9, 1.25, 1.75], "minilm": [1.0, 2.0, 4.0]}}),
    ("ours (wsd, rpg), W_gate init x0.03", "ours_gated",
     {**WSD_RPG, "encoder_init_scale": 0.03, "grid": SMALL_INIT_GRID}),
    ("saelens (constant)", "saelens", {"decay": False}),
    ("saelens (constant), aux detached", "saelens", {"decay": False, "detach_aux": True}),
    ("saelens (constant), W_dec init norm 1", "saelens",
     {"decay": False, "decoder_init_norm": 1.0}),
    ("ours (wsd, rpg), W_gate init x0.1, aux trains W_dec, global clipnorm 1",
     "ours_gated", {**WSD_RPG, "encoder_init_scale": 0.1, "aux": "trained",
                    "global_clipnorm": 1.0,
                    "grid": {"synthetic": [0.75, 1.0, 1.35], "minilm": [1.5, 3.0, 6.0]}}),
    ("ours (wsd, rpg), W_gate init x0.1, global clipnorm 1", "ours_gated",
     {**WSD_RPG, "encoder_init_scale": 0.1, "global_clipnorm": 1.0,
      "grid": {"synthetic": [0.75, 1.0, 1.35], "minilm": [1.5, 3.0, 6.0]}}),
    ("ours (wsd), SAELens-style: free W_dec at norm 0.1, norm-weighted penalty, "
     "aux trains W_dec", "ours_gated",
     {**WSD_RPG, "remove_parallel_gradient": False, "encoder_init_scale": 0.1,
      "aux": "trained", "free_decoder": True,
      "grid": {"synthetic": [0.6, 0.8, 1.1], "minilm": [0.75, 1.5, 3.0]}}),
    ("ours (wsd), SAELens-style: free W_dec at norm 0.1, norm-weighted penalty, "
     "aux trains W_dec, global clipnorm 1", "ours_gated",
     {**WSD_RPG, "remove_parallel_gradient": False, "encoder_init_scale": 0.1,
      "aux": "trained", "free_decoder": True, "global_clipnorm": 1.0,
      "grid": {"synthetic": [0.6, 0.8, 1.1], "minilm": [0.75, 1.5, 3.0]}}),
]

# Issue 23: candidates for a default at or above the best peer, each on the
# unit-norm decoder (the earlier default, `OURS_BEST`, first as the baseline).
CANDIDATE_CONTENDERS = [
    ("ours gated (paper's constant W_dec step)", "ours_gated", OURS_BEST),
    *[(f"ours gated, W_dec lr x{m:g}", "ours_gated",
       {**OURS_BEST, "decoder_lr_multiplier": m, "grid": FAST_DECODER_GRID})
      for m in (2.0, 3.0, 5.0, 10.0)],
    ("ours gated, aux trains W_dec", "ours_gated",
     {**OURS_BEST, "aux": "trained", "grid": FAST_DECODER_GRID}),
    ("ours gated, aux trains W_dec, W_dec lr x3", "ours_gated",
     {**OURS_BEST, "aux": "trained", "decoder_lr_multiplier": 3.0,
      "grid": FAST_DECODER_GRID}),
    ("ours gated, aux trains W_dec, W_dec lr x10", "ours_gated",
     {**OURS_BEST, "aux": "trained", "decoder_lr_multiplier": 10.0,
      "grid": FAST_DECODER_GRID}),
    *[(f"ours gated, aux x{alpha:g} trains W_dec, W_dec lr x3", "ours_gated",
       {**OURS_BEST, "aux": "trained", "aux_coefficient": alpha,
        "decoder_lr_multiplier": 3.0,
        # The gate's balance is lambda / alpha: the sweep scales with alpha.
        "grid": {d: [round(v * alpha, 4) for v in g] for d, g in FAST_DECODER_GRID.items()}})
      for alpha in (0.25, 0.5)],
    *[(f"ours gated, W_dec lr x{start:g} falling to x1", "ours_gated",
       {**OURS_BEST, "decoder_lr_decaying_from": start, "grid": FAST_DECODER_GRID})
      for start in (3.0, 5.0, 7.0, 10.0)],
    ("ours gated, W_dec lr x5 falling to x1 by mid-run", "ours_gated",
     {**OURS_BEST, "decoder_lr_decaying_from": 5.0, "decoder_lr_falling_fraction": 0.5,
      "grid": FAST_DECODER_GRID}),
    ("ours gated, W_dec lr x5 falling to x1, dead latents resampled", "ours_gated",
     {**OURS_BEST, "decoder_lr_decaying_from": 5.0, "resample_dead": True,
      "grid": FAST_DECODER_GRID}),
    *[(f"ours gated, aux trains W_dec for the first {f:.0%}, W_dec lr x5 falling to x1",
       "ours_gated", {**OURS_BEST, "aux": "trained", "aux_frozen_after": f,
                      "decoder_lr_decaying_from": 5.0, "grid": FAST_DECODER_GRID})
      for f in (0.25, 0.5)],
    ("ours gated, aux trains W_dec, W_dec lr x5 falling to x1", "ours_gated",
     {**OURS_BEST, "aux": "trained", "decoder_lr_decaying_from": 5.0,
      "grid": FAST_DECODER_GRID}),
]


# ------------------------------------------------------------------ data
def load(dataset, seed, quick, train_rows=None):
    """(x_train, x_test, directions or None, description).

    `train_rows`: the ground-truth datasets' training rows (None: 10,000
    with `quick`, else 50,000, the size of the studies before issue 23).
    """
    if dataset == "synthetic":
        from benchmarks.quality import ground_truth

        d, n_true, l0 = (32, 128, 4.0) if quick else (64, 512, 6.0)
        train_rows = train_rows or (10000 if quick else 50000)
        x, directions, p, _, true_l0 = ground_truth.make_data(
            d, n_true, l0, alpha=0.5, magnitude_sigma=0.5, noise=0.01,
            n_rows=train_rows + 10000, seed=seed)
        return (x[:train_rows], x[train_rows:], directions,
                f"{n_true} true unit directions in R^{d}, p ∝ (i+1)^-0.5 "
                f"({p.max():.3f}..{p.min():.4f}), true L0 {true_l0.mean():.2f}, "
                f"lognormal(0, 0.5) magnitudes, noise 0.01; {train_rows} train / "
                f"10000 held-out rows, data seed {seed}")
    if dataset == "hierarchy":
        from benchmarks.quality import ground_truth

        d, parents, l0 = HIERARCHY[quick]
        train_rows = train_rows or (10000 if quick else 50000)
        x, directions, p, _, true_l0 = ground_truth.make_hierarchical_data(
            d, parents, 3, l0, alpha=0.5, child_probability=0.35, parent_share=0.75,
            magnitude_sigma=0.5, noise=0.01, n_rows=train_rows + 10000, seed=seed)
        return (x[:train_rows], x[train_rows:], directions,
                f"{parents} parent + {3 * parents} child unit directions in R^{d} "
                "(a child fires only with its parent, w.p. 0.35; parent-child cosine "
                f"0.6), parents p ∝ (i+1)^-0.5 ({p.max():.3f}..{p.min():.4f} with the "
                f"children), true L0 {true_l0.mean():.2f}, lognormal(0, 0.5) magnitudes, "
                f"noise 0.01; {train_rows} train / 10000 held-out rows, data seed {seed}")
    if dataset == "minilm":
        from benchmarks.quality import pareto

        x_train, x_test, description = pareto.load_dataset("minilm")
        return x_train, x_test, None, description
    raise ValueError(f"unknown dataset {dataset!r}")


# --------------------------------------------------------------- scoring
def score(trained, x_test, directions, threshold=0.9, parents=0):
    """Held-out L0, dead latents, FVU, shrinkage; with `directions`, MMCS and
    recovered@`threshold` (all, the rarest half, and the first `parents`
    directions of a hierarchy, the ones absorption takes)."""
    latents, recon = trained.predict(x_test)
    x = np.asarray(x_test, "float64")
    recon = recon.astype("float64")
    active = latents > 0
    row = {
        "l0": float(active.sum(axis=1).mean()),
        "dead": int((~active.any(axis=0)).sum()),
        "fvu": float(((x - recon) ** 2).sum() / ((x - x.mean(axis=0)) ** 2).sum()),
        "shrinkage": float((recon ** 2).sum() / (recon * x).sum()),
    }
    if directions is not None:
        rows = np.asarray(trained.decoder_rows, "float64")
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        best = (directions @ rows.T).max(axis=1)
        half = len(best) // 2
        row.update(mmcs=float(best.mean()), recovered=float((best > threshold).mean()),
                   recovered_rare_half=float((best[half:] > threshold).mean()))
        if parents:
            row["recovered_parents"] = float((best[:parents] > threshold).mean())
    return row


def at_target(points, target, key):
    """`key` interpolated linearly in log L0 at `target` between the bracketing
    sweep points; None when the sweep does not bracket `target`."""
    points = sorted((p["l0"], p[key]) for p in points
                    if p.get(key) is not None and p["l0"] > 0)
    for (l0_a, va), (l0_b, vb) in zip(points, points[1:]):
        if l0_a <= target <= l0_b:
            if l0_b == l0_a:
                return (va + vb) / 2
            w = (np.log(target) - np.log(l0_a)) / (np.log(l0_b) - np.log(l0_a))
            return float(va + w * (vb - va))
    exact = [v for l0, v in points if abs(l0 - target) < 1e-9]
    return exact[0] if exact else None


# ---------------------------------------------------------------- runs
def contenders(args):
    if args.study == "peers":
        return PEER_CONTENDERS + (PEER_EXTRA_CONTENDERS if args.extra else [])
    return {"recipe": RECIPE_CONTENDERS, "ablation": ABLATION_CONTENDERS,
            "candidates": CANDIDATE_CONTENDERS}[args.study]


def run_one(trainer, kwargs, data, x_train, latent_dim, value, seed, steps,
            batch_size, lr):
    common = dict(seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                  warmup_fraction=WARMUP_FRACTION,
                  sparsity_warmup_fraction=SPARSITY_WARMUP_FRACTION,
                  decay_fraction=DECAY_FRACTION)
    kwargs = {k: v for k, v in kwargs.items() if k != "grid"}
    return qp.TRAINERS[trainer](data, x_train, latent_dim, value, **common, **kwargs)


def sweep_values(dataset, trainer, kwargs, args):
    """`--grid`, else the contender's own grid (`kwargs["grid"]`), else `GRIDS`."""
    if trainer == "ours_topk":
        return [int(t) for t in args.targets[dataset]]
    if args.grid.get(dataset):
        return args.grid[dataset]
    grid = kwargs.get("grid", {}).get(dataset) or GRIDS[(dataset, trainer)]
    return grid[:2] if args.quick else grid


def run(args):
    info = {**machine_info(), **framework_versions()}
    stem = f"quality_{args.study}" + ("_quick" if args.quick else "") + (
        f"_{args.tag}" if args.tag else "")
    figures = figures_dir()
    json_path = figures / f"{stem}.json"
    rows, skipped = [], {}
    if args.resume and json_path.exists():
        import json

        rows = [r for r in json.loads(json_path.read_text())["rows"] if "error" not in r]
        print(f"resuming with {len(rows)} rows from {json_path}")
    done = {(r["dataset"], r["seed"], r["contender"], r["value"]) for r in rows}
    descriptions = {}
    print(f"# Training quality at equal budget, study `{args.study}` "
          f"({machine_summary(info)}; keras backend {info['backend']})", flush=True)
    start_all = time.perf_counter()
    for dataset in args.datasets:
        latent_dim, steps, batch_size, lr = SIZES[(dataset, args.quick)]
        for seed in args.seeds:
            try:
                x_train, x_test, directions, description = load(
                    dataset, seed, args.quick, train_rows=(
                        steps * batch_size if args.train_rows == "one-pass"
                        else int(args.train_rows) if args.train_rows else None))
            except FileNotFoundError as error:
                print(f"skipping {dataset}: {error}")
                skipped[dataset] = str(error)
                break
            descriptions[dataset] = description
            print(f"\n## {dataset}, seed {seed}: {description}\n   latent_dim "
                  f"{latent_dim}, {steps} steps x {batch_size}, peak lr {lr}", flush=True)
            data = qp.batches(x_train, steps, batch_size, seed)
            for label, trainer, kwargs in contenders(args):
                if label in skipped or (args.contenders and not any(
                        label == c[1:] if c.startswith("=") else c in label
                        for c in args.contenders)):
                    continue
                for value in sweep_values(dataset, trainer, kwargs, args):
                    key = (dataset, seed, label, value)
                    if key in done:
                        continue
                    row = {"study": args.study, "dataset": dataset, "seed": seed,
                           "contender": label, "trainer": trainer, "kwargs": kwargs,
                           "knob": "k" if trainer == "ours_topk" else "lambda",
                           "value": value}
                    try:
                        trained = run_one(trainer, kwargs, data, x_train, latent_dim,
                                          value, seed, steps, batch_size, lr)
                    except qp.PeerUnavailable as error:
                        skipped[label] = str(error)
                        print(f"  {label}: skipped ({error})", flush=True)
                        break
                    row.update(score(trained, x_test, directions, parents=(
                        HIERARCHY[args.quick][1] if dataset == "hierarchy" else 0)),
                               seconds=round(trained.seconds, 1), library=trained.library)
                    rows.append(row)
                    extra = (f"recovered {row['recovered']:.1%} MMCS {row['mmcs']:.3f} "
                             if "mmcs" in row else "")
                    print(f"  {label:<32} {row['knob']}={value:<5g} L0 {row['l0']:7.2f} "
                          f"{extra}FVU {row['fvu']:.3f} shrinkage {row['shrinkage']:.3f} "
                          f"dead {row['dead']} ({row['seconds']:.0f} s)", flush=True)
                    write_json(json_path, {"rows": rows}, indent=1)
            del data
    total = time.perf_counter() - start_all
    summary = summarize(rows, args)
    result = {
        "command": "python -m benchmarks.quality " + " ".join(sys.argv[1:]),
        "machine": info, "seconds": round(total, 1), "study": args.study,
        "datasets": descriptions, "sizes": {
            d: dict(zip(("latent_dim", "steps", "batch_size", "peak_lr"),
                        SIZES[(d, args.quick)])) for d in args.datasets},
        "targets": args.targets, "skipped": skipped, "rows": rows, "summary": summary}
    write_json(json_path, result, indent=1)
    print_tables(result)
    png = json_path.with_suffix(".png")
    try:
        plot(result, png)
        print(f"\nfigure: {png}")
    except ImportError as error:
        print(f"no plot ({error})")
    print(f"json: {json_path}; total {total:.0f} s")
    return result


def summarize(rows, args):
    """Per (dataset, contender, target): matched-L0 scores per seed and mean."""
    out = []
    keys = {"synthetic": ("recovered", "mmcs", "fvu", "shrinkage", "dead"),
            "hierarchy": ("recovered", "mmcs", "recovered_parents", "fvu",
                          "shrinkage", "dead"),
            "minilm": ("fvu", "shrinkage", "dead")}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for label in dict.fromkeys(r["contender"] for r in rows if r["dataset"] == dataset):
            mine = [r for r in rows if r["dataset"] == dataset and r["contender"] == label]
            for target in args.targets[dataset]:
                entry = {"dataset": dataset, "contender": label, "target_l0": target,
                         "l0_range": [min(r["l0"] for r in mine), max(r["l0"] for r in mine)]}
                for key in keys[dataset]:
                    per_seed = {}
                    for seed in sorted({r["seed"] for r in mine}):
                        runs = [r for r in mine if r["seed"] == seed]
                        at_k = [r.get(key) for r in runs
                                if r["knob"] == "k" and r["value"] == target]
                        # A TopK SAE is read at k = the target: its held-out
                        # L0 sits a little under k where a selected latent is 0.
                        per_seed[seed] = at_k[0] if at_k else at_target(runs, target, key)
                    values = [v for v in per_seed.values() if v is not None]
                    entry[key] = {"per_seed": per_seed,
                                  "mean": float(np.mean(values)) if len(values) == len(
                                      per_seed) else None}
                out.append(entry)
    return out


def _cell(metric, spec):
    if metric is None:
        return ""
    per_seed = [format(v, spec) if v is not None else "–"
                for v in metric["per_seed"].values()]
    mean = format(metric["mean"], spec) if metric["mean"] is not None else "–"
    return mean if len(per_seed) == 1 else f"{mean} ({', '.join(per_seed)})"


def print_tables(result):
    for dataset in dict.fromkeys(r["dataset"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["dataset"] == dataset]
        synthetic = dataset in GROUND_TRUTH
        columns = [("contender", "contender", "s"), ("seed", "seed", "d"),
                   ("knob", "knob", "s"), ("value", "value", "g"), ("L0", "l0", ".2f")]
        if synthetic:
            columns += [("recovered@0.9", "recovered", ".1%"),
                        ("rarest half", "recovered_rare_half", ".1%"),
                        ("MMCS", "mmcs", ".3f")]
        if dataset == "hierarchy":
            columns += [("parents", "recovered_parents", ".1%")]
        columns += [("FVU", "fvu", ".3f"), ("shrinkage γ", "shrinkage", ".3f"),
                    ("dead", "dead", "d"), ("train s", "seconds", ".0f")]
        print(f"\n### {dataset}: every run (held-out rows)\n")
        print(column_table(rows, columns))
        summary = [s for s in result["summary"] if s["dataset"] == dataset]
        metrics = ([("recovered@0.9", "recovered", ".1%"), ("MMCS", "mmcs", ".3f")]
                   if synthetic else []) + ([("parents recovered", "recovered_parents",
                                              ".1%")] if dataset == "hierarchy" else []) + [("FVU", "fvu", ".3f"),
                                            ("shrinkage γ", "shrinkage", ".3f")]
        for target in dict.fromkeys(s["target_l0"] for s in summary):
            print(f"\n### {dataset}: at matched L0 = {target:g} (mean over seeds; "
                  "per seed in brackets)\n")
            print(markdown_table(
                ["contender", "L0 range of the sweep"] + [m[0] for m in metrics],
                [[s["contender"], f"{s['l0_range'][0]:.1f}-{s['l0_range'][1]:.1f}"]
                 + [_cell(s[key], spec) for _, key, spec in metrics]
                 for s in summary if s["target_l0"] == target]))
    for label, why in result["skipped"].items():
        print(f"\nskipped {label}: {why}")


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    datasets = list(dict.fromkeys(r["dataset"] for r in result["rows"]))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(12, 4.3 * len(datasets)),
                             squeeze=False)
    labels = list(dict.fromkeys(r["contender"] for r in result["rows"]))
    cmap = plt.cm.tab10 if len(labels) <= 10 else plt.cm.tab20
    colors = {label: cmap(i % cmap.N) for i, label in enumerate(labels)}
    peer = ("dictionary_learning", "saelens")
    for row_axes, dataset in zip(axes, datasets):
        keys = ([("recovered", "recovered@0.9"), ("mmcs", "MMCS")]
                if dataset in GROUND_TRUTH else
                [("fvu", "FVU (held out)"), ("shrinkage", "shrinkage γ")])
        rows = [r for r in result["rows"] if r["dataset"] == dataset]
        for ax, (key, name) in zip(row_axes, keys):
            for label in labels:
                for seed, marker in zip(sorted({r["seed"] for r in rows}), "os^v"):
                    pts = sorted((r["l0"], r[key]) for r in rows
                                 if r["contender"] == label and r["seed"] == seed)
                    if pts:
                        ax.plot(*zip(*pts), marker=marker, color=colors[label],
                                ls="--" if label.startswith(peer) else "-", lw=1.3,
                                label=label if seed == min(r["seed"] for r in rows)
                                else None)
            for target in result["targets"][dataset]:
                ax.axvline(target, color="k", lw=0.8, ls=":")
            ax.set_xscale("log")
            low, high = ax.get_xlim()
            ax.set_xticks([t for t in (1, 2, 3, 4, 6, 8, 10, 15, 20, 30, 40, 60, 80,
                                       100, 150, 200, 300) if low <= t <= high])
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("L0 (held out, log scale)")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3, which="both")
            ax.set_title(f"{dataset}: {name} vs L0 (marker = seed)", fontsize=9)
    handles, names = axes[0][0].get_legend_handles_labels()
    legend = fig.legend(handles, names, loc="lower center", ncol=2, fontsize=8,
                        bbox_to_anchor=(0.5, 0.0), frameon=False)
    fig.suptitle(f"quality study `{result['study']}`: equal budget per dataset; "
                 "dotted line = matched-L0 target", fontsize=9)
    fig.tight_layout(rect=(0, 0.035 * (len(labels) + 1) / 2 * 2 / len(datasets), 1, 1))
    fig.savefig(path, dpi=100, bbox_extra_artists=[legend], bbox_inches="tight")
    plt.close(fig)


def parse_grid(text):
    """`"synthetic=1,2;minilm=2,4"` -> `{"synthetic": [1.0, 2.0], ...}`."""
    grid = {}
    for item in filter(None, (i.strip() for i in text.split(";"))):
        name, values = item.split("=")
        grid[name.strip()] = [float(v) for v in values.split(",")]
    return grid


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=("peers", "recipe", "ablation", "candidates"), default="peers")
    parser.add_argument("--datasets", default="synthetic,hierarchy,minilm")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--contenders", default="",
                        help="semicolon-separated substrings of the contender labels to "
                             "run (`=label`: that label exactly)")
    parser.add_argument("--grid", default="",
                        help='coefficients per dataset for every gated trainer, '
                             'e.g. "synthetic=1,2,4;minilm=2,4,8"')
    parser.add_argument("--targets", default="",
                        help='matched-L0 targets, e.g. "synthetic=6;minilm=16,32"')
    parser.add_argument("--extra", action="store_true",
                        help="peers study: also each peer with its own linear lr "
                             "decay over the last 20%% of the steps, and our gated "
                             "SAE with the aux term training W_dec")
    parser.add_argument("--train-rows", default="",
                        help="training rows of the ground-truth datasets: a number, "
                             "or `one-pass` (steps x batch: every row seen once, as an "
                             "SAE sees LLM activations); default 50,000 (10,000 with "
                             "--quick), which the SAEs see 15 times")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: small data and models, 1 seed, 2-point sweeps")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows of an earlier run's JSON, run the rest")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--replot", metavar="JSON",
                        help="reprint the tables and redraw the PNG of an earlier "
                             "run (with --targets: recompute the summary)")
    args = parser.parse_args(argv)
    if args.replot:
        import json

        result = json.loads(pathlib.Path(args.replot).read_text())
        if args.targets:   # recompute the matched-L0 summary at other targets
            result["targets"] = {**result["targets"], **parse_grid(args.targets)}
            args.targets = result["targets"]
            result["summary"] = summarize(result["rows"], args)
            write_json(args.replot, result, indent=1)
        print_tables(result)
        plot(result, pathlib.Path(args.replot).with_suffix(".png"))
        return result
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.quick:
        args.seeds = args.seeds[:1]
    args.contenders = [c.strip() for c in args.contenders.split(";") if c.strip()]
    args.grid = parse_grid(args.grid)
    targets = {k: list(v) for k, v in TARGETS.items()}
    if args.quick:
        targets = {"synthetic": [4.0], "minilm": [32.0], "hierarchy": [6.0]}
    targets.update(parse_grid(args.targets))
    args.targets = targets
    return run(args)


if __name__ == "__main__":
    main()
