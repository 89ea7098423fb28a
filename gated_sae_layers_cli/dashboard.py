"""`gated-sae dashboard`: its options and early checks, standard library only.

The command itself is `gated_sae_layers.cli.dashboard.run_dashboard`.
"""

from gated_sae_layers_cli.options import Command, add_command, add_overwrite_option
from gated_sae_layers_cli.outputs import (
    DASHBOARD_FILES, check_input_file, check_keras_file, check_not_an_input,
    check_output_folder, check_store_folder, written_by_a_dashboard)


def add_dashboard_command(subparsers, parents=()):
    """Adds the `dashboard` command to an `argparse` subparsers object.

    Example:

    >>> import argparse
    >>> top = argparse.ArgumentParser(prog="gated-sae")
    >>> _ = add_dashboard_command(top.add_subparsers(dest="command"))
    >>> args = top.parse_args(["dashboard", "sae.keras", "--store", "s/", "--out", "r/"])
    >>> args.model, args.store, args.num_latents, args.image_shape
    ('sae.keras', 's/', 100, None)
    """
    command = add_command(
        subparsers, "dashboard", parents,
        help="a static HTML report to browse the SAE's latents offline",
        description="Writes a feature dashboard: index.html (open it in any browser, "
                    "offline) and summary.json. A store harvested from minilm gets text "
                    "pages; --image-shape shows each row as an image.")
    command.add_argument("model", metavar="MODEL.keras", help="the SAE, a .keras file")
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", metavar="STORE_DIR", help="an activation store folder")
    source.add_argument("--activations", metavar="FILE.npy",
                        help="a (rows, input_dim) float array instead of a store")
    command.add_argument("--out", required=True, metavar="DIR", help=(
        "the report folder (its parent must exist); only index.html and "
        "summary.json are written there"))
    command.add_argument("--num-latents", type=int, default=100,
                         help="latents given a page (the most interesting ones)")
    command.add_argument("--image-shape", type=int, nargs="+", metavar="N", help=(
        "show examples as images of this shape, e.g. 28 28; its product must be the "
        "rows' width, or that of --images (default: no images)"))
    command.add_argument("--images", metavar="FILE.npy", help=(
        "with --image-shape: one image per row (default: the rows themselves)"))
    command.add_argument("--texts", metavar="FILE", help=(
        "for a store harvested from a text file: that file (a path in the store's "
        "metadata is never opened) (default: none)"))
    command.add_argument("--window", type=int, default=8,
                         help="for text: tokens shown on each side of an example")
    command.add_argument("--batch-size", type=int, default=1024,
                         help="rows through the SAE at a time")
    add_overwrite_option(command, "a report (index.html, summary.json) in --out")
    command.set_defaults(
        run=Command(check_dashboard, "gated_sae_layers.cli.dashboard:run_dashboard"))
    return command


def check_dashboard(args):
    """The checks of `dashboard` that need no model: its files and numbers."""
    check_keras_file(args.model)
    if args.store is not None:
        check_store_folder(args.store)
    for option, path in (("--activations", args.activations), ("--images", args.images),
                         ("--texts", getattr(args, "texts", None))):
        if path is not None:
            check_input_file(path, option)
    if args.images is not None and args.image_shape is None:
        raise ValueError("`--images` needs `--image-shape`, e.g. --image-shape 28 28.")
    shape = args.image_shape
    if shape is not None and (len(shape) not in (2, 3) or min(shape) <= 0
                              or (len(shape) == 3 and shape[2] != 1)):
        raise ValueError(
            "`--image-shape` must be HEIGHT WIDTH (or HEIGHT WIDTH 1), positive "
            f"integers, e.g. 28 28. Received: --image-shape {' '.join(map(str, shape))}")
    for option, value in (("--num-latents", args.num_latents), ("--window", args.window),
                          ("--batch-size", args.batch_size)):
        if value <= 0:
            raise ValueError(f"`{option}` must be a positive integer. Received: {value}")
    check_not_an_input(
        "--out", args.out,
        {"MODEL.keras": args.model, "--store": args.store,
         "--activations": args.activations, "--images": args.images,
         "--texts": getattr(args, "texts", None)}, names=DASHBOARD_FILES)
    check_output_folder(args.out, "--out", DASHBOARD_FILES,
                        getattr(args, "overwrite", False), written_by_a_dashboard,
                        not_ours="no feature dashboard wrote it")
