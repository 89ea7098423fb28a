"""Feature dashboards: a static HTML report to browse an SAE's latents offline.

* `feature_dashboard`: the report (`report.py`), written to one folder
  whose rules are in `output.py`; its page in `html.py`, `_script.py`,
  `_style.py`;
* `TokenContext` (`text.py`) and `ImageContext` (`images.py`): what an
  example shows, text around a token or an image;
* `collect_statistics` (`collect.py`) and `LatentStatistics`
  (`statistics.py`): the one streaming pass, in memory bounded
  independently of the rows, with the bounded per-latent buffers of
  `buffers.py`.

`gated-sae dashboard` (`gated_sae_layers/cli/dashboard.py`) runs it on a
store or an `.npy` file.
"""

from gated_sae_layers.dashboard.buffers import BoundedTop, uniform_keys
from gated_sae_layers.dashboard.collect import collect_statistics
from gated_sae_layers.dashboard.images import ImageContext
from gated_sae_layers.dashboard.report import feature_dashboard
from gated_sae_layers.dashboard.statistics import LatentStatistics, histogram_edges
from gated_sae_layers.dashboard.text import TokenContext

__all__ = [
    "BoundedTop", "ImageContext", "LatentStatistics", "TokenContext",
    "collect_statistics", "feature_dashboard", "histogram_edges", "uniform_keys",
]
