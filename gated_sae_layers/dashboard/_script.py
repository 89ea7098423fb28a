"""The report's script (plain JavaScript, inline in `index.html`, no library).

It reads the JSON of `#dashboard-data` and draws, by the URL's hash, the
overview (`#` or empty: cards, histograms as SVG, the latent table with
sorting, search and paging of `PAGE_SIZE` rows, so 16k+ latents stay fast)
or a latent's page (`#latent-12`). For a transcoder (`summary.model_type`)
the fidelity cards are of `y` and a page lists its top output features; for
a crosscoder (`DATA.layer_norms`, one list of per-layer decoder norms per
latent) the table and pages show each latent's norm in every layer. Text
from the data only ever reaches the page as `textContent` or an attribute
value: never as HTML.
"""

SCRIPT = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("dashboard-data").textContent);
  var S = DATA.summary, L = DATA.latents, PAGES = DATA.pages;
  var NORMS = DATA.layer_norms || null, TRANSCODER = S.model_type === "transcoder";
  var app = document.getElementById("app");
  var PAGE_SIZE = 50, SVG = "http://www.w3.org/2000/svg";
  var state = {sort: "frequency", descending: true, query: "", page: 0};

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { node.appendChild(c); } });
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined) { return "n/a"; }
    if (v === 0) { return "0"; }
    var a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) { return v.toExponential(2); }
    return String(Number(v.toPrecision(4)));
  }
  function card(label, value) {
    return el("div", {"class": "card"}, [el("div", {"class": "v", text: value}),
                                         el("div", {"class": "k", text: label})]);
  }

  // A bar chart of `counts`; `tick(i)` is the label at bar i's left edge, or null.
  function barChart(title, counts, tick, id) {
    var width = 420, height = 150, bottom = 18, n = Math.max(counts.length, 1);
    var top = Math.max.apply(null, counts.concat([1]));
    var chart = svg("svg", {width: width, height: height});
    var step = width / n;
    counts.forEach(function (c, i) {
      var h = (height - bottom - 4) * c / top;
      var bar = svg("rect", {"class": "bar", x: i * step + 0.5, y: height - bottom - h,
                             width: Math.max(step - 1, 1), height: h});
      var tip = svg("title", {}); tip.textContent = (tick(i, true) || "") + ": " + c;
      bar.appendChild(tip); chart.appendChild(bar);
    });
    var lastX = -100;
    for (var i = 0; i <= n; i++) {
      var label = tick(i, false);
      if (label !== null && i * step - lastX > 40) {
        var t = svg("text", {x: Math.min(i * step, width - 24), y: height - 4});
        t.textContent = label; chart.appendChild(t); lastX = i * step;
      }
    }
    return el("div", {"class": "chart", id: id}, [el("div", {"class": "t", text: title}), chart]);
  }

  // A crosscoder latent's decoder norm in each layer, one bar per layer,
  // scaled to its largest norm; each bar's tooltip gives the value.
  function layerBars(norms, width, height) {
    var chart = svg("svg", {width: width, height: height, "class": "layer-bars"});
    var top = Math.max.apply(null, norms.concat([1e-12])), step = width / Math.max(norms.length, 1);
    norms.forEach(function (v, l) {
      var h = v > 0 ? Math.max(height * v / top, 1) : 0;
      var bar = svg("rect", {"class": "bar", x: l * step + 0.5, y: height - h,
                             width: Math.max(step - 1, 1), height: h});
      var tip = svg("title", {}); tip.textContent = "layer " + l + ": " + fmt(v);
      bar.appendChild(tip); chart.appendChild(bar);
    });
    return chart;
  }
  function layerNormChart(i) {
    var norms = NORMS[i];
    var cells = function (head, values) {
      return el("tr", {}, [el("th", {text: head})].concat(values.map(function (v) {
        return el("td", {"class": "num", text: v}); })));
    };
    return el("div", {"class": "chart", id: "layer-norms"}, [
      el("div", {"class": "t", text: "Decoder norm per layer (crosscoder)"}),
      layerBars(norms, Math.min(420, Math.max(80, 40 * norms.length)), 80),
      el("table", {"class": "layer-norms"}, [el("tbody", {}, [
        cells("layer", norms.map(function (v, l) { return String(l); })),
        cells("norm", norms.map(fmt))])])]);
  }

  function l0Chart() {
    var counts = DATA.l0_histogram, width = Math.max(1, Math.ceil(counts.length / 60)), bars = [];
    for (var i = 0; i < counts.length; i += width) {
      bars.push(counts.slice(i, i + width).reduce(function (a, b) { return a + b; }, 0));
    }
    return barChart("L0: latents active per row (" + S.num_rows + " rows)", bars,
                    function (i, exact) { return exact || i % 5 === 0 ? String(i * width) : null; },
                    "l0-histogram");
  }
  function densityChart() {
    var edges = DATA.density.edges;
    return barChart("Feature density: log10 firing frequency (" + S.latent_dim + " latents; dead at -10)",
                    DATA.density.counts, function (i, exact) {
                      return exact || Number.isInteger(edges[i]) ? String(edges[i]) : null; },
                    "density-histogram");
  }

  // ------------------------------------------------------------ overview
  function matches(i, query) {
    if (!query) { return true; }
    if (/^\d+$/.test(query) && Number(query) === i) { return true; }
    return Boolean(L.label && L.label[i] && L.label[i].toLowerCase().indexOf(query) >= 0);
  }
  function visibleLatents() {
    var query = state.query.trim().toLowerCase(), shown = [];
    for (var i = 0; i < S.latent_dim; i++) { if (matches(i, query)) { shown.push(i); } }
    var key = state.sort, sign = state.descending ? -1 : 1;
    shown.sort(function (a, b) {
      var d = key === "latent" ? a - b : L[key][a] - L[key][b];
      return d !== 0 ? sign * d : a - b;
    });
    return shown;
  }
  function latentLink(i) {
    return PAGES[String(i)] ? el("a", {href: "#latent-" + i, text: String(i)})
                            : el("span", {"class": "muted", text: String(i)});
  }
  function renderTable(table, info, prev, next) {
    var shown = visibleLatents(), pages = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * PAGE_SIZE, body = el("tbody");
    shown.slice(start, start + PAGE_SIZE).forEach(function (i) {
      body.appendChild(el("tr", {"data-latent": i}, [
        el("td", {}, [latentLink(i)]),
        el("td", {"class": "num", text: fmt(L.frequency[i])}),
        el("td", {"class": "num", text: fmt(L.mean[i])}),
        el("td", {"class": "num", text: fmt(L.max[i])}),
        NORMS ? el("td", {"class": "layers", title: NORMS[i].map(fmt).join(" / ")},
                   [layerBars(NORMS[i], 12 * NORMS[i].length, 14)]) : null,
        L.label ? el("td", {text: L.label[i] || ""}) : null]));
    });
    table.replaceChild(body, table.tBodies[0]);
    info.textContent = shown.length ? (start + 1) + "-" + Math.min(start + PAGE_SIZE, shown.length) +
      " of " + shown.length + " latents" : "no latent matches";
    prev.disabled = state.page === 0; next.disabled = state.page >= pages - 1;
    Array.prototype.forEach.call(table.querySelectorAll("th button"), function (b) {
      var on = b.getAttribute("data-sort") === state.sort;
      b.className = on ? "active" : "";
      b.textContent = b.getAttribute("data-name") + (on ? (state.descending ? " \u25bc" : " \u25b2") : "");
    });
  }
  function overview() {
    var of = TRANSCODER ? " of y" : "";
    var cards = el("div", {"class": "cards"}, [
      card("rows", String(S.num_rows)), card("latents", String(S.latent_dim)),
      card("mean L0", fmt(S.l0)), card("FVU" + of, fmt(S.fvu)), card("shrinkage" + of, fmt(S.shrinkage)),
      card("dead latents", String(S.dead)),
      card("dense (> " + S.dense_threshold + ")", String(S.dense)),
      card("latent pages", String(S.pages.length))]);
    if (TRANSCODER) { cards.appendChild(card("transcoder x \u2192 y", S.input_dim + " \u2192 " + S.output_dim)); }
    (S.fvu_layers || []).forEach(function (v, l) { cards.appendChild(card("FVU layer " + l, fmt(v))); });
    var search = el("input", {type: "search", id: "search",
                              placeholder: L.label ? "latent index or token" : "latent index"});
    search.value = state.query;
    var prev = el("button", {id: "prev", text: "\u2190 prev"}), next = el("button", {id: "next", text: "next \u2192"});
    var info = el("span", {id: "page-info", "class": "muted"});
    var headers = [["latent", "latent"], ["frequency", "frequency"], ["mean", "mean act."],
                   ["max", "max act."]].map(function (h) {
      return el("th", {}, [el("button", {"data-sort": h[0], "data-name": h[1], text: h[1]})]);
    });
    if (NORMS) { headers.push(el("th", {text: "decoder norm by layer"})); }
    if (L.label) { headers.push(el("th", {text: "top tokens"})); }
    var table = el("table", {id: "latent-table"}, [el("thead", {}, [el("tr", {}, headers)]), el("tbody")]);
    var redraw = function () { renderTable(table, info, prev, next); };
    search.addEventListener("input", function () { state.query = search.value; state.page = 0; redraw(); });
    prev.addEventListener("click", function () { state.page -= 1; redraw(); });
    next.addEventListener("click", function () { state.page += 1; redraw(); });
    headers.forEach(function (th) {
      var b = th.querySelector("button");
      if (!b) { return; }
      b.addEventListener("click", function () {
        var key = b.getAttribute("data-sort");
        state.descending = state.sort === key ? !state.descending : key !== "latent";
        state.sort = key; state.page = 0; redraw();
      });
    });
    app.replaceChildren(el("h2", {text: "Overview"}), cards,
      el("div", {"class": "charts"}, [l0Chart(), densityChart()]),
      el("h2", {text: "Latents"}),
      el("div", {"class": "controls"}, [search, prev, next, info]), table);
    redraw();
  }

  // ------------------------------------------------------------ a latent
  function tokenText(token, first) {
    if (token.indexOf("##") === 0) { return token.slice(2); }
    if (token.charAt(0) === "\u2581") { return " " + token.slice(1); }
    return first ? token : " " + token;
  }
  function textExample(example, scale) {
    var row = el("div", {"class": "example", "data-row": example.row},
                 [el("span", {"class": "val", text: fmt(example.acts[example.center])})]);
    example.tokens.forEach(function (token, j) {
      var a = example.acts[j], alpha = scale > 0 ? Math.min(Math.max(a / scale, 0), 1) : 0;
      var span = el("span", {"class": "tok" + (j === example.center ? " center" : ""),
                             "data-act": a, title: "activation " + fmt(a),
                             style: "background-color: rgba(255, 140, 0, " + alpha.toFixed(3) + ")",
                             text: tokenText(token, j === 0)});
      row.appendChild(span);
    });
    return row;
  }
  // An image's attributes: its size from DATA.image_size, [width, height] in
  // CSS pixels in the image's own aspect ratio (a 4 x 8 image is drawn 84 x 42).
  function imageAttributes(src, alt, kind) {
    var size = DATA.image_size[kind];
    return {src: src, alt: alt, width: size[0], height: size[1]};
  }
  function section(page, sec) {
    var body;
    if (DATA.kind === "text") {
      body = el("div", {"class": "examples"}, sec.examples.map(function (e) { return textExample(e, page.max); }));
    } else if (DATA.kind === "image") {
      body = el("div", {"class": "images"}, sec.examples.map(function (e) {
        return el("div", {"class": "img example", "data-row": e.row}, [
          el("img", imageAttributes(e.image, "row " + e.row, "example")),
          el("span", {text: fmt(e.value)})]);
      }));
    } else {
      body = el("div", {"class": "examples"}, sec.examples.map(function (e) {
        return el("div", {"class": "example", "data-row": e.row, text: "row " + e.row + ": " + fmt(e.value)});
      }));
    }
    if (!sec.examples.length) { body = el("div", {"class": "muted", text: "no examples"}); }
    return el("div", {"class": "section"}, [el("h3", {text: sec.name}), body]);
  }
  function activationChart(page) {
    var bins = DATA.histogram_bins, first = page.histogram.first;
    var edge = function (b) { return b === 0 ? 0 : Math.pow(10, bins.log10_low + (b - 1) / bins.per_decade); };
    return barChart("Activation histogram (" + page.count + " firing rows; log-spaced bins)",
                    page.histogram.counts, function (i, exact) {
                      return exact || i % 4 === 0 ? fmt(edge(first + i)) : null; }, "activation-histogram");
  }
  function latentView(i) {
    var page = PAGES[String(i)];
    var back = el("p", {}, [el("a", {href: "#", id: "back", text: "\u2190 all latents"})]);
    if (!page) {
      app.replaceChildren(back, el("h2", {text: "Latent " + i}), el("p", {"class": "muted",
        text: i >= 0 && i < S.latent_dim ? "frequency " + fmt(L.frequency[i]) + ", mean " + fmt(L.mean[i]) +
          ", max " + fmt(L.max[i]) + ". Only the " + S.pages.length + " most interesting latents have a page."
          : "There is no latent " + i + "."}));
      return;
    }
    var neighbors = el("p", {"class": "neighbors"}, [el("b", {text: "Nearest by decoder cosine: "})]);
    page.neighbors.forEach(function (n) {
      var link = latentLink(n[0]); link.textContent = n[0] + " (" + n[1].toFixed(3) + ")";
      neighbors.appendChild(link);
    });
    var charts = [activationChart(page)];
    if (page.decoder_image) {
      charts.push(el("div", {"class": "chart img", id: "decoder-image"}, [
        el("div", {"class": "t", text: "Decoder direction" + (TRANSCODER ? " in the output space" : "") +
                                       " (red +, blue -)"}),
        el("img", imageAttributes(page.decoder_image, "decoder row " + i, "decoder"))]));
    }
    if (NORMS) { charts.push(layerNormChart(i)); }
    var outputs = null;
    if (page.top_outputs) {
      outputs = el("p", {"class": "neighbors", id: "top-outputs"},
                   [el("b", {text: "Top output features (decoder weight): "})]);
      page.top_outputs.forEach(function (o) {
        outputs.appendChild(el("span", {text: o[0] + " (" + (o[1] > 0 ? "+" : "") + fmt(o[1]) + ")"}));
      });
    }
    app.replaceChildren(back, el("h2", {id: "latent-title", text: "Latent " + i + (L.label && L.label[i] ? ": " + L.label[i] : "")}),
      el("div", {"class": "cards"}, [card("frequency", fmt(page.frequency)), card("firing rows", String(page.count)),
        card("mean act.", fmt(page.mean)), card("max act.", fmt(page.max))]),
      el("div", {"class": "charts"}, charts), neighbors);
    if (outputs) { app.appendChild(outputs); }
    page.sections.forEach(function (sec) { app.appendChild(section(page, sec)); });
  }

  function route() {
    var match = /^#latent-(\d+)$/.exec(window.location.hash);
    if (match) { latentView(Number(match[1])); window.scrollTo(0, 0); } else { overview(); }
  }
  window.addEventListener("hashchange", route);
  route();
})();
"""
