"""`python -m gated_sae_layers.cli`: the `gated-sae` command line."""

import sys

from gated_sae_layers_cli import main

sys.exit(main())
