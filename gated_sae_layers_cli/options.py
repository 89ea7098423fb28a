"""The parser's machinery, standard library only: one-line argument errors, help
that shows every default, argument types, the options every command shares, and
`Command`, which imports a command's module only when it runs."""

import argparse
import importlib
import math


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are one line, `gated-sae: error:
    ...`, like every other error of the command line (exit status 2)."""

    def error(self, message):
        self.exit(2, f"gated-sae: error: {message} (see `{self.prog} --help`)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends `(default: ...)` to each option's help unless its help says
    it already (flags, `store_true`, are off unless given; required options
    have none). A description or epilog with indented lines (examples)
    keeps its line breaks; other text is wrapped."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("(default" in text or action.nargs == 0 or action.required
                or not action.option_strings):
            return text
        return super()._get_help_string(action)

    def _fill_text(self, text, width, indent):
        if "\n  " in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


# ------------------------------------------------------------ argument types
def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _number(text, minimum, strict):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise argparse.ArgumentTypeError(
            f"expected a finite number {'>' if strict else '>='} {minimum:g}, got {text!r}")
    return value


def positive_float(text):
    return _number(text, 0.0, strict=True)


def non_negative_float(text):
    return _number(text, 0.0, strict=False)


# ------------------------------------------------------------ shared options
def common_options():
    """A parent parser with the options every command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE",
                        help="import MODULE first (repeatable), e.g. to register the "
                             "custom layers of a .keras model (default: none)")
    common.add_argument("--quiet", action="store_true", help="no progress output")
    common.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line, and "
                             "TensorFlow's start-up log lines")
    return common


def add_command(subparsers, name, parents, **kwargs):
    """`subparsers.add_parser(name, ...)` with the shared options and help style."""
    return subparsers.add_parser(name, parents=list(parents) or [common_options()],
                                 formatter_class=HelpFormatter, **kwargs)


def add_overwrite_option(command, what):
    command.add_argument("--overwrite", action="store_true", help=(
        f"replace {what} if it exists (without it, an existing output is an error)"))


def import_modules(names):
    """Imports each module named by `--import`; a failure is a user error."""
    for name in names or ():
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ValueError(f"`--import {name}` failed: {error}") from None


# ------------------------------------------------------------ lazy commands
class Command:
    """A command: `check(args)` (standard library only, run before anything
    heavy is imported) and `target`, `"module:function"`, imported only when
    the command runs. `gated-sae` calls `check`, then `load` (with
    TensorFlow's start-up log lines filtered), then the function; calling a
    `Command` (as `args.run(args)`) runs the function, which checks too."""

    def __init__(self, check, target):
        self.check = check
        self.module, _, self.function = target.partition(":")

    def load(self):
        return getattr(importlib.import_module(self.module), self.function)

    def __call__(self, args):
        return self.load()(args)

    def __repr__(self):
        return f"Command({self.module}:{self.function})"
