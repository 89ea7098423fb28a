"""The commands of `gated-sae`, one module each: `harvest`, `train`, `evaluate`,
`interop` (`export`, `import`) and `dashboard`.

The parser, the early checks of every path and `main` live in the package
`gated_sae_layers_cli`, which imports only the standard library, so that
`gated-sae --help` and argument errors answer at once; it imports a module
here only when its command runs. Each command is `run_*(args)` with the
parsed arguments: it checks them again (as `gated_sae_layers_cli` does),
does the work, prints one line of JSON and returns it as a dict. User
errors raise `USER_ERRORS`, which `main` prints as one line with exit
status 2. `python -m gated_sae_layers.cli` runs the same command line
(after importing this package, so more slowly than `gated-sae`).
"""

from gated_sae_layers.activations.store import StoreLockedError
from gated_sae_layers_cli import main, parser

USER_ERRORS = (OSError, ValueError, TypeError, StoreLockedError)

__all__ = ["USER_ERRORS", "main", "parser"]
