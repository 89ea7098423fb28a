"""What every `gated-sae` command shares: `--import`, `--quiet`, `--debug`."""

import argparse
import importlib


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
