"""`gated-sae harvest`: its options and early checks, standard library only.

The command itself is `gated_sae_layers.cli.harvest.run_harvest`.
"""

from gated_sae_layers_cli.options import (
    Command, add_command, non_negative_int, positive_int)
from gated_sae_layers_cli.outputs import (
    check_input_file, check_not_an_input, check_store_out)

DEFAULT_MAX_TEXTS = 2000

EXAMPLES = """examples:
  gated-sae harvest --model minilm --layer transformer_layer_2 --max-texts 200 --out store/
  gated-sae harvest --model minilm --layer transformer_layer_2 --skip 200 --max-texts 50 \\
      --out held_out_store/
  gated-sae harvest --model net.keras --layer hidden --inputs x.npy --out store/
  gated-sae harvest --model minilm --layer transformer_layer_2/self_attention_layer_norm \
      --target-layer transformer_layer_2/feedforward_output_dense --out mlp_store/
"""


def add_harvest_command(subparsers, parents=()):
    """Adds the `harvest` command to an `argparse` subparsers object.

    Example:

    >>> import argparse
    >>> top = argparse.ArgumentParser(prog="gated-sae")
    >>> _ = add_harvest_command(top.add_subparsers(dest="command"))
    >>> args = top.parse_args(["harvest", "--model", "minilm", "--layer", "l",
    ...                        "--out", "s/", "--skip", "200"])
    >>> args.skip, args.max_texts, args.texts, args.layer, args.target_layer
    (200, None, 'stdlib', ['l'], [])
    """
    command = add_command(
        subparsers, "harvest", parents, epilog=EXAMPLES,
        help="collect a layer's activations into a store",
        description="Runs a model over texts or inputs and writes one layer's "
                    "activations, one row per token or example, into an activation "
                    "store (a folder of shards). With several layers (--layer "
                    "repeated, or --target-layer), each row holds their outputs side "
                    "by side, inputs first, and the store records the blocks and "
                    "their roles (for transcoders and crosscoders).")
    command.add_argument("--model", required=True,
                         help="'minilm' (all-MiniLM-L6-v2, offline) or a .keras file")
    command.add_argument("--layer", required=True, action="append", metavar="NAME", help=(
        "the layer's name, e.g. transformer_layer_2, or path, e.g. "
        "transformer_layer_2/feedforward_output_dense (repeat for several input "
        "blocks)"))
    command.add_argument("--target-layer", action="append", default=[], metavar="NAME",
                         help=("a layer whose output is a target block, after the "
                               "--layer blocks (repeatable; default: none)"))
    command.add_argument("--out", required=True, metavar="STORE_DIR",
                         help="the store folder: new or empty (its parent must exist)")
    command.add_argument("--texts", default="stdlib",
                         help="for minilm: 'stdlib' (standard-library docstrings) or a "
                              "text file, one text per line")
    command.add_argument("--inputs", metavar="FILE.npy", help=(
        "for a .keras model: a .npy array of its inputs, one example per row "
        "(default: none; needed with a .keras model)"))
    command.add_argument("--skip", type=non_negative_int, default=0, metavar="N", help=(
        "skip the first N texts (minilm) or rows of --inputs: a held-out store from "
        "the same source takes --skip equal to the first store's --max-texts"))
    command.add_argument("--max-texts", type=positive_int, metavar="N", help=(
        "harvest at most N texts (minilm) or rows of --inputs, after --skip "
        f"(default: {DEFAULT_MAX_TEXTS} texts; every row of --inputs)"))
    command.add_argument("--sequence-length", type=positive_int, default=64,
                         help="for minilm: tokens per text (longer texts are cut)")
    command.add_argument("--drop-special-tokens", action="store_true",
                         help="drop [CLS] and [SEP] positions (padding is always dropped)")
    command.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                         help="the stored dtype (float16 holds values up to 65504)")
    command.add_argument("--shard-rows", type=positive_int, default=65536,
                         help="rows per shard file")
    command.add_argument("--batch-size", type=positive_int, default=32,
                         help="examples per forward pass")
    mode = command.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue an interrupted harvest (same model, layer and inputs)")
    mode.add_argument("--overwrite", action="store_true", help=(
        "replace the store at --out if there is one (only a folder holding nothing "
        "but the store's files); the old store stays until the new one is complete"))
    command.set_defaults(
        run=Command(check_harvest, "gated_sae_layers.cli.harvest:run_harvest"))
    return command


def check_harvest(args):
    """The checks of `harvest` that need no model: its layers, input files and
    `--out`."""
    places = args.layer + args.target_layer
    repeated = sorted({name for name in places if places.count(name) > 1})
    if repeated:
        raise ValueError(
            "`--layer` and `--target-layer` must name each layer once. Received: "
            f"--layer {args.layer} --target-layer {args.target_layer}, repeating "
            f"{repeated}")
    if args.model == "minilm":
        if args.inputs is not None:
            raise ValueError(
                "`--inputs` is for a .keras model; --model minilm reads --texts. "
                f"Received: --inputs={args.inputs}")
        if args.texts != "stdlib":
            check_input_file(args.texts, "--texts")
    else:
        if not args.inputs:
            raise ValueError("`--inputs FILE.npy` is needed with a .keras model.")
        check_input_file(args.model, "--model")
        check_input_file(args.inputs, "--inputs")
    check_not_an_input(
        "--out", args.out,
        {"--model": None if args.model == "minilm" else args.model,
         "--inputs": args.inputs,
         "--texts": None if args.texts == "stdlib" else args.texts})
    check_store_out(args.out, args.resume, args.overwrite)
