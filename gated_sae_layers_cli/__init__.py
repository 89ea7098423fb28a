"""`gated-sae`: harvest activations to a store, train an SAE on it, evaluate,
export and browse it.

    gated-sae harvest --model minilm --layer transformer_layer_2 --max-texts 200 --out store/
    gated-sae harvest --model minilm --layer transformer_layer_2 --skip 200 --max-texts 50 \\
        --out held_out_store/
    gated-sae train --store store/ --latent-dim 4096 --out sae.keras    (to ~2% L0)
    gated-sae evaluate sae.keras --store held_out_store/ [--json report.json]
    gated-sae export sae.keras saelens_folder/      (and: gated-sae import folder/ sae.keras)
    gated-sae dashboard sae.keras --store store/ --out report/

This package is the front of the command line, and imports only the
standard library: it parses the arguments and checks every file and folder
they name, so `--help` and every argument error answer at once. A command's
module in `gated_sae_layers.cli`, and with it Keras and TensorFlow, is
imported only when the command runs. (It lives beside `gated_sae_layers`,
not in it: importing any module of that package first imports the whole
package, Keras included, to register its classes.)

The rules every command follows: a user error (a missing file, a bad value,
an existing output, a corrupt or locked store) prints one line,
`gated-sae: error: ...`, and exits with status 2 (130 on Ctrl-C). An output
that exists is refused unless `--overwrite` is given, and is then replaced
safely (written beside it, renamed into place; see `outputs`). TensorFlow's
start-up log lines are not shown (`TF_CPP_MIN_LOG_LEVEL=3`, unless set
already). `--debug` shows tracebacks and those log lines instead.
`--import MODULE` (repeatable) imports a module first, so that the custom
layers it registers with `keras.saving.register_keras_serializable` load.
"""

import contextlib
import re
import sys

from gated_sae_layers_cli._native_logs import native_logs_filtered, quiet_native_logs
from gated_sae_layers_cli.options import ArgumentParser, HelpFormatter, common_options
from gated_sae_layers_cli.dashboard import add_dashboard_command
from gated_sae_layers_cli.evaluate import add_evaluate_command
from gated_sae_layers_cli.harvest import add_harvest_command
from gated_sae_layers_cli.interop import add_interop_commands
from gated_sae_layers_cli.train import add_train_command

# Before a command's module is imported; `gated_sae_layers.cli.USER_ERRORS`
# adds the kit's own (a locked store) once it is.
USER_ERRORS = (OSError, ValueError, TypeError)
_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")


def parser():
    """The `gated-sae` argument parser (every command, every option)."""
    summary, examples = __doc__.split("\n\n")[:2]
    top = ArgumentParser(prog="gated-sae", description=summary,
                         formatter_class=HelpFormatter, epilog=f"examples:\n{examples}\n\n`gated-sae COMMAND --help` "
                                "shows each command's options and defaults.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    add_harvest_command(commands, parents=[common])
    add_train_command(commands, parents=[common])
    add_evaluate_command(commands, parents=[common])
    add_interop_commands(commands, parents=[common])
    add_dashboard_command(commands, parents=[common])
    return top


def one_line(error):
    """An error's message on one line, without terminal escape codes.

    >>> one_line(ValueError("Calling \\x1b[1mDense\\x1b[0m:\\n  bad input"))
    'Calling Dense: bad input'
    """
    message = " ".join(_ESCAPE.sub("", str(error)).split())
    return message or type(error).__name__


def _user_errors():
    commands = sys.modules.get("gated_sae_layers.cli")
    return getattr(commands, "USER_ERRORS", USER_ERRORS)


def main(argv=None):
    """Runs the command line; returns the exit status (2 for a user error)."""
    args = parser().parse_args(argv)
    quiet = not args.debug and quiet_native_logs()
    try:
        args.run.check(args)
        with native_logs_filtered() if quiet else contextlib.nullcontext():
            run = args.run.load()
        run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("gated-sae: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - user errors become one line
        if args.debug or not isinstance(error, _user_errors()):
            raise
        print(f"gated-sae: error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


__all__ = ["main", "one_line", "parser"]
