"""What every `gated-sae` command shares: `--import`, `--quiet`, `--debug`, and the
early checks of the files and folders it is given."""

import argparse
import importlib
import pathlib


def common_options():
    """A parent parser with the options every command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE",
                        help="import MODULE first (repeatable), e.g. to register the "
                             "custom layers of a .keras model")
    common.add_argument("--quiet", action="store_true")
    common.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line")
    return common


def import_modules(names):
    """Imports each module named by `--import`; a failure is a user error."""
    for name in names or ():
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ValueError(f"`--import {name}` failed: {error}") from None


# ------------------------------------------------------------ early checks
def check_keras_file(path):
    """`path` names an existing `.keras` file (the `MODEL.keras` argument)."""
    if pathlib.Path(path).suffix != ".keras" or not pathlib.Path(path).is_file():
        raise FileNotFoundError(
            f"`MODEL.keras` must be an existing .keras file. Received: {path}")


def check_store_folder(path):
    """`path` is an activation store folder (it holds a manifest)."""
    if not (pathlib.Path(path) / "manifest.json").is_file():
        raise FileNotFoundError(
            f"`--store`: no activation store (manifest.json) at {path}.")


def check_input_file(path, option):
    """`path`, given with `option`, is an existing file."""
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"`{option}`: no file at {path}.")
