"""`gated-sae train`: its options and early checks, standard library only.

The command itself is `gated_sae_layers.cli.train.run_train`.
"""

from gated_sae_layers_cli.options import (
    Command, add_command, add_overwrite_option, non_negative_float, positive_float,
    positive_int)
from gated_sae_layers_cli.outputs import (
    check_not_an_input, check_output_file, check_store_folder)

DEFAULT_L0_FRACTION = 0.02
DEFAULT_STEPS = 2000
ARCHITECTURES = ("gated", "relu", "topk", "batch_topk", "jumprelu", "matryoshka")
"""The names of `gsl.ARCHITECTURES` (this module imports nothing heavy;
`tests/test_cli.py` holds the two equal)."""
K_ARCHITECTURES = ("topk", "batch_topk", "matryoshka")
"""The architectures whose L0 is set by `k`, not steered."""
CROSSCODER_ARCHITECTURES = ("relu", "topk", "batch_topk")
"""The names of `gsl.build_crosscoder`'s architectures (held equal by
`tests/test_cli_transcoders.py`); the first is the default with `--crosscoder`."""

EXAMPLES = """examples:
  gated-sae train --store store/ --latent-dim 4096 --out sae.keras      (to L0 ~ 82)
  gated-sae train --store store/ --latent-dim 4096 --target-l0 32 --out sae.keras
  gated-sae train --store store/ --sparsity-coefficient 1.0 --out sae.keras   (fixed)
  gated-sae train --store store/ --architecture topk --k 32 --out sae.keras
  gated-sae train --store mlp_store/ --skip --architecture topk --k 32 --out tc.keras
      (a store harvested with --target-layer: a skip transcoder, input -> target blocks)
  gated-sae train --store layers_store/ --crosscoder --out crosscoder.keras
      (a store of several --layer blocks of one width: a crosscoder over all of them)
"""


def chosen_architecture(args):
    """`--architecture`, or its default: `relu` with `--crosscoder` (the
    paper's crosscoder), `gated` otherwise."""
    if args.architecture is not None:
        return args.architecture
    return CROSSCODER_ARCHITECTURES[0] if args.crosscoder else "gated"


def default_target_l0(latent_dim):
    """The L0 `train` aims at by default: 2% of the latents, at least 1."""
    return max(1, round(DEFAULT_L0_FRACTION * latent_dim))


def default_epochs(num_rows, batch_size):
    """The passes over a store of `num_rows` that make `DEFAULT_STEPS` steps.

    >>> default_epochs(5000, 1024), default_epochs(10_000_000, 1024)
    (400, 1)
    """
    steps_per_epoch = -(-num_rows // batch_size)
    return max(1, -(-DEFAULT_STEPS // steps_per_epoch))


def add_train_command(subparsers, parents=()):
    """Adds the `train` command to an `argparse` subparsers object.

    Example:

    >>> import argparse
    >>> top = argparse.ArgumentParser(prog="gated-sae")
    >>> _ = add_train_command(top.add_subparsers(dest="command"))
    >>> args = top.parse_args(["train", "--store", "s/", "--out", "sae.keras"])
    >>> args.target_l0, args.sparsity_coefficient, default_target_l0(args.latent_dim)
    (None, None, 82)
    """
    command = add_command(
        subparsers, "train", parents, epilog=EXAMPLES,
        help="train a gated SAE (or another architecture) on a store (by default "
             "to ~2%% L0)",
        description="Trains a gated SAE (or --architecture) on a store's rows. By "
                    "default its sparsity coefficient is steered during training "
                    "(gsl.TargetL0) so that L0, the mean number of active latents per "
                    "row, reaches ~2% of --latent-dim. Pass --target-l0 for another L0, "
                    "or --sparsity-coefficient alone for a fixed coefficient. TopK, "
                    "BatchTopK and Matryoshka SAEs keep --k latents per row instead. "
                    "A store whose metadata has roles (harvested with --target-layer) "
                    "trains a transcoder (gsl.build_transcoder) from its input blocks "
                    "to its target blocks; --crosscoder trains a crosscoder "
                    "(gsl.build_crosscoder) over every block of a store of several.")
    command.add_argument("--store", required=True, metavar="STORE_DIR",
                         help="the activation store to train on")
    command.add_argument("--out", required=True, metavar="SAE.keras",
                         help="the .keras file to write (its folder must exist)")
    command.add_argument("--latent-dim", type=positive_int, default=4096,
                         help="the number of latents (dictionary size)")
    command.add_argument("--architecture", choices=ARCHITECTURES, help=(
        "the SAE variant, gsl.build_sae (default: gated; relu with --crosscoder, "
        "which takes relu, topk or batch_topk)"))
    command.add_argument("--skip", action="store_true", help=(
        "a skip transcoder (y_hat = f W_dec + b_dec + x W_skip): needs a store with "
        "roles, harvested with --target-layer (such a store trains a transcoder "
        "without the skip by default)"))
    command.add_argument("--crosscoder", action="store_true", help=(
        "a crosscoder over every block of the store (harvested with --layer "
        "repeated), each block one layer: all blocks must have one width (roles, "
        "if any, are ignored)"))
    command.add_argument("--k", type=positive_int, help=(
        "topk, batch_topk, matryoshka: the latents kept per row (default: "
        "--target-l0 if given, else 2%% of --latent-dim)"))
    command.add_argument("--target-l0", type=positive_float, metavar="L0", help=(
        "the L0 (mean active latents per row) to train to: the sparsity coefficient "
        "is steered there (default: 2%% of --latent-dim, rounded, at least 1; "
        "82 for 4096)"))
    command.add_argument("--sparsity-coefficient", type=non_negative_float, help=(
        "alone: a fixed sparsity coefficient, not steered; with --target-l0: the "
        "coefficient the steering starts from (default: steered, from 1.0)"))
    command.add_argument("--aux-coefficient", type=non_negative_float, help=(
        "the weight of the auxiliary loss (default: the builder's, 1.0 for the gated "
        "SAE's, 1/32 for AuxK; relu and jumprelu have none)"))
    command.add_argument("--decoder-lr-multiplier", type=positive_float, metavar="M",
                         help=(
        "gated SAEs: the optimizer steps W_dec M times as far as the other weights at "
        "the first step, falling linearly to 1x at the last, gsl.falling_multiplier "
        "(default: 5, the measured best; 1 = the paper's constant step)"))
    command.add_argument("--epochs", type=positive_int, help=(
        f"passes over the store (default: as many as make {DEFAULT_STEPS:,} steps, at "
        "least 1, logged as at most 10 epochs: the steering to --target-l0 needs a "
        "few hundred steps)"))
    command.add_argument("--batch-size", type=positive_int, default=1024,
                         help="rows per training step")
    command.add_argument("--lr", type=positive_float, default=1e-3, help=(
        "the peak learning rate (a warm-up over 5%% of the steps, held, decayed "
        "linearly over the last 20%%)"))
    command.add_argument("--seed", type=int, default=0,
                         help="seed of the data order and of the decoder bias' estimate")
    command.add_argument("--no-normalize", dest="normalize", action="store_false", help=(
        "train on raw activations (default: scaled to mean squared norm = input_dim, "
        "for a transcoder x and y together by one factor, the scale folded into the "
        "saved weights)"))
    add_overwrite_option(command, "the --out file")
    command.set_defaults(run=Command(check_train, "gated_sae_layers.cli.train:run_train"))
    return command


def check_train(args):
    """The checks of `train` that need no store read: `--out`, `--store` and
    the sparsity options together."""
    check_not_an_input("--out", args.out, {"--store": args.store})
    check_output_file(args.out, "--out", args.overwrite, suffix=".keras")
    check_store_folder(args.store)
    architecture = chosen_architecture(args)
    if args.skip and args.crosscoder:
        raise ValueError(
            "`--skip` trains a skip transcoder and `--crosscoder` a crosscoder: pass "
            "one of them. Received: --skip --crosscoder")
    if args.crosscoder and architecture not in CROSSCODER_ARCHITECTURES:
        raise ValueError(
            f"`--crosscoder` takes --architecture {', '.join(CROSSCODER_ARCHITECTURES)} "
            f"(gsl.build_crosscoder; relu, the paper's, by default). Received: "
            f"--architecture {architecture}")
    fixed_k = architecture in K_ARCHITECTURES
    if fixed_k and args.sparsity_coefficient is not None:
        raise ValueError(
            f"`--sparsity-coefficient` does not apply to --architecture "
            f"{architecture}: --k sets its L0. Received: "
            f"--sparsity-coefficient={args.sparsity_coefficient:g}")
    if not fixed_k and args.k is not None:
        raise ValueError(
            f"`--k` applies to --architecture {', '.join(K_ARCHITECTURES)} only; "
            f"{architecture} is steered by --target-l0. Received: --k={args.k}")
    if architecture in ("relu", "jumprelu") and args.aux_coefficient is not None:
        raise ValueError(
            f"`--aux-coefficient` does not apply to --architecture {architecture} "
            f"(it has no auxiliary loss). Received: --aux-coefficient="
            f"{args.aux_coefficient:g}")
    if args.decoder_lr_multiplier is not None and (
            architecture != "gated" or args.skip or args.crosscoder):
        raise ValueError(
            "`--decoder-lr-multiplier` applies to gated SAEs (--architecture gated, "
            f"no --skip or --crosscoder). Received: --decoder-lr-multiplier="
            f"{args.decoder_lr_multiplier:g} with --architecture {architecture}"
            f"{' --skip' if args.skip else ''}{' --crosscoder' if args.crosscoder else ''}")
    if args.decoder_lr_multiplier is not None and args.decoder_lr_multiplier < 1:
        raise ValueError(
            "`--decoder-lr-multiplier` must be >= 1: it falls from there to 1. "
            f"Received: --decoder-lr-multiplier={args.decoder_lr_multiplier:g}")
    if args.k is not None and args.k > args.latent_dim:
        raise ValueError(
            f"`--k` must be at most --latent-dim ({args.latent_dim}). Received: "
            f"--k={args.k}")
    if args.target_l0 is not None:
        if args.target_l0 > args.latent_dim:
            raise ValueError(
                f"`--target-l0` must be at most --latent-dim ({args.latent_dim}): it "
                f"counts active latents. Received: --target-l0={args.target_l0:g}")
        if args.sparsity_coefficient == 0:
            raise ValueError(
                "`--sparsity-coefficient` must be > 0 with --target-l0: the steering "
                "scales it. Received: --sparsity-coefficient=0")
