"""The feature dashboard of transcoders and crosscoders.

* a transcoder's latents come from `x`, its decoder (neighbours, top output
  features, decoder image) lives in the output space of any width, and its
  FVU and shrinkage are those of `y_hat` against `targets`, brute force;
* a crosscoder's page holds, per latent, its decoder norm in every layer:
  the numbers of `crosscoder_decoder_norms` to the printed precision (4
  significant digits), in the data and in the text the script draws;
* the script runs (Node, with a small stand-in for the DOM: the Chromium
  checks are in `test_dashboard_browser.py`) and the page names no
  external URL.
"""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers.activations import ActivationStore
from gated_sae_layers.dashboard import ImageContext, feature_dashboard
from gated_sae_layers.dashboard._script import SCRIPT

INPUT_DIM, OUTPUT_DIM, LATENT_DIM, ROWS = 6, 4, 24, 300


def _report_data(index):
    text = index.read_text()
    start = text.index('id="dashboard-data">') + len('id="dashboard-data">')
    return json.loads(text[start:text.index("</script>", start)])


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0, 0.5, tuple(variable.shape)).astype("float32"))


@pytest.fixture(scope="module")
def transcoder_and_pairs():
    model = gsl.build_transcoder("topk", INPUT_DIM, OUTPUT_DIM, LATENT_DIM, k=3, skip=True)
    _randomize(model)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(ROWS, INPUT_DIM)).astype("float32")
    y = (np.maximum(x @ rng.normal(size=(INPUT_DIM, OUTPUT_DIM)), 0)).astype("float32")
    return model, x, y


@pytest.fixture(scope="module")
def crosscoder_and_rows():
    num_layers, width = 3, 4
    model = gsl.build_crosscoder(width, num_layers, LATENT_DIM, sparsity_coefficient=1e-3)
    _randomize(model, seed=2)
    # Per-layer norms far apart: each latent writes mostly to one layer.
    kernel = np.asarray(model.decoder.kernel)
    scales = np.random.default_rng(3).uniform(0.01, 3.0, size=(LATENT_DIM, num_layers))
    model.decoder.kernel.assign((kernel.reshape(LATENT_DIM, num_layers, width)
                                 * scales[:, :, None]).reshape(LATENT_DIM, -1)
                                .astype("float32"))
    x = np.random.default_rng(4).normal(size=(ROWS, num_layers * width)).astype("float32")
    return model, x


def _fvu(target, prediction):
    target, prediction = np.asarray(target, "float64"), np.asarray(prediction, "float64")
    return ((target - prediction) ** 2).sum() / ((target - target.mean(axis=0)) ** 2).sum()


# ------------------------------------------------------------ transcoders
def test_a_transcoder_of_another_output_width_end_to_end(transcoder_and_pairs, tmp_path):
    model, x, y = transcoder_and_pairs
    index = feature_dashboard(model, x, tmp_path / "report", num_latents=6, batch_size=64,
                              progress=False, targets=y)
    data = _report_data(index)
    summary = data["summary"]
    assert (summary["model_type"], summary["input_dim"], summary["output_dim"]) == (
        "transcoder", INPUT_DIM, OUTPUT_DIM)
    y_hat = model.predict(x, verbose=0)["reconstruction"]
    assert y_hat.shape == (ROWS, OUTPUT_DIM)
    np.testing.assert_allclose(summary["fvu"], _fvu(y, y_hat), rtol=1e-5)
    np.testing.assert_allclose(
        summary["shrinkage"],
        (y_hat.astype("float64") ** 2).sum() / (y_hat.astype("float64") * y).sum(), rtol=1e-5)
    assert summary["l0"] == 3.0
    # Latents from x: each page's top examples are the brute-force top rows of encode(x).
    latents = model.encode(x)
    decoder = np.asarray(model.decoder.kernel, "float64")
    assert decoder.shape == (LATENT_DIM, OUTPUT_DIM)
    assert len(data["pages"]) == 6
    for key, page in data["pages"].items():
        i = int(key)
        rows = np.flatnonzero(latents[:, i] > 0)
        top = rows[np.lexsort((rows, -latents[rows, i]))][:12]
        assert [e["row"] for e in page["sections"][0]["examples"]] == top.tolist()
        # Top output features: all output_dim of them here, by |W_dec[i, j]|.
        expected = np.argsort(-np.abs(decoder[i]), kind="stable")
        assert [j for j, _ in page["top_outputs"]] == expected.tolist()
        np.testing.assert_allclose([w for _, w in page["top_outputs"]], decoder[i, expected],
                                   rtol=5e-4)
        assert len(page["neighbors"]) == 6 and page["decoder_image"] is None
    on_disk = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert on_disk["fvu"] == summary["fvu"] and on_disk["output_dim"] == OUTPUT_DIM


def test_transcoder_targets_from_stores_of_other_shards_give_the_same_report(
        transcoder_and_pairs, tmp_path):
    model, x, y = transcoder_and_pairs
    stores = []
    for name, rows, shard_rows in (("x", x, 37), ("y", y, 50)):
        store = ActivationStore.create(tmp_path / name, rows.shape[1], "float32",
                                       shard_rows=shard_rows)
        store.append(rows)
        store.close()
        stores.append(ActivationStore.open(tmp_path / name))
    from_arrays = _report_data(feature_dashboard(
        model, x, tmp_path / "a", num_latents=3, batch_size=64, progress=False, targets=y))
    from_stores = _report_data(feature_dashboard(
        model, stores[0], tmp_path / "b", num_latents=3, batch_size=64, progress=False,
        targets=stores[1]))
    for key in ("fvu", "shrinkage", "l0", "pages"):
        assert from_stores["summary"][key] == pytest.approx(from_arrays["summary"][key],
                                                            rel=1e-9)


def test_without_targets_a_transcoders_fidelity_is_left_out(transcoder_and_pairs, tmp_path):
    model, x, _ = transcoder_and_pairs
    # Examples drawn as images of x (6 pixels); W_dec (4 wide) is no such image.
    index = feature_dashboard(model, x, tmp_path, ImageContext((2, 3)), num_latents=2,
                              progress=False)
    data = _report_data(index)
    assert data["summary"]["fvu"] is None and data["summary"]["shrinkage"] is None
    assert data["summary"]["l0"] == 3.0
    page = next(iter(data["pages"].values()))
    assert page["decoder_image"] is None
    assert page["sections"][0]["examples"][0]["image"].startswith("data:image/png;base64,")


def test_a_transcoder_whose_output_is_the_image_draws_its_decoder_row(tmp_path):
    model = gsl.build_transcoder("relu", 3, 6, 8, sparsity_coefficient=1e-3)
    _randomize(model)
    x = np.random.default_rng(0).normal(size=(50, 3)).astype("float32")
    images = np.random.default_rng(1).random((50, 6)).astype("float32")
    index = feature_dashboard(model, x, tmp_path, ImageContext((2, 3), images),
                              num_latents=2, progress=False)
    assert all(page["decoder_image"].startswith("data:image/png;base64,")
               for page in _report_data(index)["pages"].values())


@pytest.mark.parametrize("case, match", [
    ("sae", "reconstructs `x` itself"),
    ("width", "4 values a row"),
    ("rows", "one row per row of `x`"),
    ("nan", "NaN or Inf"),
])
def test_bad_targets_fail_before_any_file(transcoder_and_pairs, tmp_path, case, match):
    model, x, y = transcoder_and_pairs
    targets = {"width": y[:, :3], "rows": y[:-1],
               "nan": np.where(np.arange(ROWS)[:, None] == 7, np.nan, y)}.get(case, y)
    if case == "sae":
        model = gsl.build_sae("topk", INPUT_DIM, LATENT_DIM, k=3)
    with pytest.raises(ValueError, match=match):
        feature_dashboard(model, x, tmp_path / "report", targets=targets, progress=False)
    assert not (tmp_path / "report").exists()


# ------------------------------------------------------------ crosscoders
def test_a_crosscoder_page_holds_its_per_layer_decoder_norms(crosscoder_and_rows, tmp_path):
    model, x = crosscoder_and_rows
    index = feature_dashboard(model, x, tmp_path, num_latents=5, batch_size=64,
                              progress=False)
    data = _report_data(index)
    norms = gsl.crosscoder_decoder_norms(model)  # (num_layers, latent_dim)
    assert norms.shape == (3, LATENT_DIM)
    printed = np.array(data["layer_norms"])
    assert printed.shape == (LATENT_DIM, 3)
    np.testing.assert_array_equal(
        printed, [[float(f"{v:.4g}") for v in row] for row in norms.T.tolist()])
    np.testing.assert_allclose(printed, norms.T, rtol=5e-4)
    summary = data["summary"]
    assert (summary["model_type"], summary["num_layers"]) == ("crosscoder", 3)
    reconstruction = model.predict(x, verbose=0)["reconstruction"]
    expected = [_fvu(x[:, 4 * l:4 * (l + 1)], reconstruction[:, 4 * l:4 * (l + 1)])
                for l in range(3)]
    np.testing.assert_allclose(summary["fvu_layers"], expected, rtol=1e-5)
    np.testing.assert_allclose(summary["fvu"], _fvu(x, reconstruction), rtol=1e-5)


# ------------------------------------------------------------ the page itself
# A stand-in for the DOM, just what the script uses; the page's data, the
# script, then each route: prints the text of every element with an id or
# a class, per route.
DOM = r"""
function Node(tag) { this.tag = tag; this.attrs = {}; this.children = []; this.own = "";
                     this.listeners = {}; }
Object.defineProperty(Node.prototype, "textContent", {
  get: function () { return this.own + this.children.map(function (c) { return c.textContent; }).join(""); },
  set: function (v) { this.own = String(v); this.children = []; }});
Object.defineProperty(Node.prototype, "tBodies", {
  get: function () { return this.children.filter(function (c) { return c.tag === "tbody"; }); }});
Node.prototype.setAttribute = function (k, v) { this.attrs[k] = String(v); };
Node.prototype.getAttribute = function (k) { return k in this.attrs ? this.attrs[k] : null; };
Node.prototype.appendChild = function (c) { this.children.push(c); return c; };
Node.prototype.replaceChildren = function () { this.own = ""; this.children = [].slice.call(arguments); };
Node.prototype.replaceChild = function (n, o) { this.children[this.children.indexOf(o)] = n; };
Node.prototype.addEventListener = function (e, f) { (this.listeners[e] = this.listeners[e] || []).push(f); };
Node.prototype.all = function () {
  var out = [];
  this.children.forEach(function (c) { out.push(c); out.push.apply(out, c.all()); });
  return out; };
Node.prototype.querySelectorAll = function (selector) {
  var tag = selector.split(" ").pop();
  return this.all().filter(function (n) { return n.tag === tag; }); };
Node.prototype.querySelector = function (s) { return this.querySelectorAll(s)[0] || null; };
var nodes = {"dashboard-data": new Node("script"), "app": new Node("main")};
nodes["dashboard-data"].own = DATA_TEXT;
var listeners = {};
var window = {location: {hash: ""}, scrollTo: function () {},
              addEventListener: function (e, f) { listeners[e] = f; }};
var document = {getElementById: function (id) { return nodes[id]; },
                createElement: function (tag) { return new Node(tag); },
                createElementNS: function (ns, tag) { return new Node(tag); }};
function dump() {
  return nodes.app.all().filter(function (n) { return n.attrs.id || n.attrs["class"]; })
    .map(function (n) { return {tag: n.tag, id: n.attrs.id || null, "class": n.attrs["class"] || null,
                                title: n.attrs.title || null, text: n.textContent,
                                nums: n.all().filter(function (c) { return c.attrs["class"] === "num"; })
                                  .map(function (c) { return c.textContent; })}; }); }
var routes = {};
"""


def _rendered(index, hashes):
    """`{hash: [{tag, id, class, title, text, nums}, ...]}` (`nums`: the
    texts of the `.num` cells inside): the script run on the
    page's data under Node, for the overview (`""`) and each `hashes`."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the page's script is not run")
    text = index.read_text()
    start = text.index('id="dashboard-data">') + len('id="dashboard-data">')
    data_text = text[start:text.index("</script>", start)]
    program = (f"var DATA_TEXT = {json.dumps(data_text)};\n" + DOM + SCRIPT
               + "routes[''] = dump();\n"
               + "".join(f"window.location.hash = {json.dumps(h)}; listeners.hashchange(); "
                         f"routes[{json.dumps(h)}] = dump();\n" for h in hashes)
               + "console.log(JSON.stringify(routes));\n")
    result = subprocess.run([node, "-e", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _by(elements, key, value):
    return [e for e in elements if e[key] == value]


def test_the_script_prints_a_crosscoders_per_layer_norms(crosscoder_and_rows, tmp_path):
    model, x = crosscoder_and_rows
    index = feature_dashboard(model, x, tmp_path, num_latents=5, progress=False)
    data = _report_data(index)
    norms = gsl.crosscoder_decoder_norms(model)
    hashes = [f"#latent-{i}" for i in data["summary"]["pages"]]
    routes = _rendered(index, hashes)
    overview = routes[""]
    # The table: one cell of bars per latent, its tooltip the norms.
    table = _by(overview, "id", "latent-table")[0]
    assert "decoder norm by layer" in table["text"]
    cells = _by(overview, "class", "layers")
    assert len(cells) == LATENT_DIM  # one page of the table: all 24 latents
    for cell in cells:
        assert len(cell["title"].split(" / ")) == 3
    shown = {tuple(float(v) for v in cell["title"].split(" / ")) for cell in cells}
    assert shown == {tuple(float(f"{v:.4g}") for v in column) for column in norms.T}
    assert [c["text"] for c in _by(overview, "class", "k") if c["text"].startswith("FVU layer")] \
        == ["FVU layer 0", "FVU layer 1", "FVU layer 2"]
    for page_hash in hashes:
        latent = int(page_hash.split("-")[1])
        chart = _by(routes[page_hash], "id", "layer-norms")
        assert len(chart) == 1
        # The table's cells in order: the layers 0 1 2, then their norms.
        layers, numbers = chart[0]["nums"][:3], chart[0]["nums"][3:]
        assert layers == ["0", "1", "2"] and len(numbers) == 3
        np.testing.assert_allclose([float(v) for v in numbers], norms[:, latent], rtol=5e-4)
        assert [float(v) for v in numbers] == [float(f"{v:.4g}") for v in norms[:, latent]]


def test_the_script_shows_a_transcoders_output_space(transcoder_and_pairs, tmp_path):
    model, x, y = transcoder_and_pairs
    index = feature_dashboard(model, x, tmp_path, num_latents=3, progress=False, targets=y)
    data = _report_data(index)
    latent = data["summary"]["pages"][0]
    routes = _rendered(index, [f"#latent-{latent}"])
    labels = [c["text"] for c in _by(routes[""], "class", "k")]
    assert "FVU of y" in labels and "shrinkage of y" in labels
    assert "transcoder x \u2192 y" in labels
    values = {c["text"] for c in _by(routes[""], "class", "v")}
    assert f"{INPUT_DIM} \u2192 {OUTPUT_DIM}" in values
    outputs = _by(routes[f"#latent-{latent}"], "id", "top-outputs")
    assert len(outputs) == 1
    for feature, weight in data["pages"][str(latent)]["top_outputs"]:
        assert f"{feature} ({'+' if weight > 0 else ''}" in outputs[0]["text"]
    assert not _by(routes[""], "class", "layers")  # no crosscoder column


def test_the_page_names_no_external_url_and_writes_no_html(crosscoder_and_rows, tmp_path):
    model, x = crosscoder_and_rows
    index = feature_dashboard(model, x, tmp_path, num_latents=2, progress=False)
    text = index.read_text()
    assert set(re.findall(r"[a-z]+://[^\"'\s)]*", text)) <= {"http://www.w3.org/2000/svg"}
    assert "innerHTML" not in SCRIPT and "insertAdjacentHTML" not in SCRIPT
    assert "document.write" not in SCRIPT and "eval(" not in SCRIPT
