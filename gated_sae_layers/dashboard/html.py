"""The report's one HTML file: data as inline JSON, the page script and style.

No network and no server: everything is in the file, and the script
(`_script.py`, plain JavaScript) draws the overview and, for `#latent-12`,
latent 12's page. The JSON sits in a `<script type="application/json">`
element with every `<` escaped, so no text in the data can end it.
"""

import html
import json

from gated_sae_layers.dashboard._script import SCRIPT
from gated_sae_layers.dashboard._style import STYLE
from gated_sae_layers.dashboard.output import PAGE_HEAD, new_report_id, report_id_of

# `PAGE_HEAD` (the first lines, with the report id) is what `output` reads
# back to tell a dashboard's page from a user's.
TEMPLATE = PAGE_HEAD + """<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><a href="#" id="home">Feature dashboard</a> <span id="subtitle">{title}</span></header>
<main id="app"><noscript>This report needs JavaScript.</noscript></main>
<script type="application/json" id="dashboard-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""


def render_html(data):
    """The report page for `data` (the dict `feature_dashboard` builds), with
    the report id of `data["summary"]["report_id"]` (a new one if absent).

    Example:

    >>> page = render_html({"summary": {"model": "a</script>"}})
    >>> "a</script>" in page, "a\\\\u003c/script\\\\u003e" in page
    (False, True)
    """
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    summary = data.get("summary", {})
    title = html.escape(f"{summary.get('model', 'SAE')}: {summary.get('latent_dim', '?')} "
                        f"latents on {summary.get('num_rows', '?')} rows")
    report_id = report_id_of(summary.get("report_id") or new_report_id())
    return TEMPLATE.format(report_id=report_id, title=title, style=STYLE, data=text,
                           script=SCRIPT)
