"""The report's style sheet (inline in `index.html`)."""

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1d2430; background: #f6f7f9; }
header { background: #1d2430; color: #fff; padding: 10px 20px; }
header a { color: #fff; font-weight: 600; text-decoration: none; }
#subtitle { color: #b9c2d0; margin-left: 12px; }
main { padding: 16px 20px; max-width: 1200px; }
h2 { font-size: 18px; margin: 18px 0 8px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 8px 14px;
        min-width: 92px; }
.card .v { font-size: 20px; font-weight: 600; }
.card .k { color: #5b6676; font-size: 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.chart { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 8px; }
.chart svg { display: block; }
.chart .t { font-size: 12px; color: #5b6676; margin-bottom: 4px; }
svg rect.bar { fill: #4a78c2; }
svg text { font-size: 10px; fill: #5b6676; }
.controls { margin: 10px 0; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
input[type=search] { padding: 5px 8px; width: 260px; border: 1px solid #b9c2d0; border-radius: 4px; }
button { padding: 4px 10px; border: 1px solid #b9c2d0; background: #fff; border-radius: 4px;
         cursor: pointer; }
button:disabled { color: #aab; cursor: default; }
table { border-collapse: collapse; background: #fff; width: 100%; }
th, td { border-bottom: 1px solid #e6e9ee; padding: 4px 8px; text-align: left; }
th button { border: none; background: none; font-weight: 600; padding: 0; }
th button.active { color: #c0392b; }
td.num { font-variant-numeric: tabular-nums; text-align: right; }
.examples { display: flex; flex-direction: column; gap: 3px; }
.example { background: #fff; border: 1px solid #e6e9ee; border-radius: 4px; padding: 3px 8px;
           font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 13px; }
.example .val { color: #5b6676; display: inline-block; width: 70px; }
.tok { border-radius: 2px; padding: 0 1px; }
.tok.center { outline: 1.5px solid #c0392b; font-weight: 700; }
.images { display: flex; flex-wrap: wrap; gap: 8px; }
.img { text-align: center; font-size: 11px; color: #5b6676; }
.img img { image-rendering: pixelated; border: 1px solid #dde1e7; display: block; }
.neighbors a, .neighbors span { margin-right: 10px; }
td.layers svg { display: inline-block; vertical-align: middle; }
table.layer-norms { width: auto; margin-top: 4px; }
table.layer-norms th, table.layer-norms td { padding: 2px 6px; }
.muted { color: #7a8595; }
"""
