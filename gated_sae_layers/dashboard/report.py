"""`feature_dashboard`: a static HTML report of an SAE's latents, in one folder."""

import json
import numbers

import numpy as np

from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.dashboard import output
from gated_sae_layers.dashboard.collect import collect_statistics, pair_activations, read_rows
from gated_sae_layers.dashboard.decoder import (
    decoder_rows, layer_norms, model_type, nearest_latents, top_outputs)
from gated_sae_layers.dashboard.html import render_html
from gated_sae_layers.dashboard.statistics import BINS_PER_DECADE, LOG10_LOW
from gated_sae_layers.activations import rows as activation_rows
from gated_sae_layers.activations.store import ActivationStore
from gated_sae_layers.evaluation.core import density_histogram

TOP_EXAMPLES = 12                 # top-activating examples on a page
QUANTILE_GROUPS, PER_GROUP = 4, 3  # examples from each quartile of the range
SAMPLE_SIZE = 128                 # the per-latent uniform sample of the pass
DENSE_THRESHOLD = 0.1             # a latent firing on more rows is dense
EXAMPLE_IMAGE_BOX = 84            # the long side of an example's image, in CSS px
DECODER_IMAGE_BOX = 150           # the long side of a decoder row's image


class RowContext:
    """No context: an example is its row index and activation."""

    kind = "rows"
    num_rows = None

    def window_rows(self, row):
        return np.array([row])

    def example(self, row, rows, activations, pixels=None):
        del rows, pixels
        return {"row": int(row), "value": float(f"{activations[0]:.4g}")}

    def decoder_image(self, decoder_row):
        del decoder_row

    def label(self, rows):
        del rows
        return ""


def _finite(value):
    """`value` as a float, or `None` (JSON's null) where it is NaN or Inf."""
    return float(value) if np.isfinite(value) else None


def _round(values):
    return [float(f"{v:.4g}") for v in np.asarray(values, "float64").tolist()]


def _check_context(context, num_rows, input_dim):
    if context is None:
        return RowContext()
    if not all(hasattr(context, name) for name in ("window_rows", "example", "label")):
        raise TypeError(
            "`context` must be a `TokenContext`, an `ImageContext` or None. "
            f"Received: context={context!r:.100}")
    if context.num_rows is not None and context.num_rows != num_rows:
        raise ValueError(
            f"`context` describes {context.num_rows} rows but `x` has {num_rows}: "
            "they must be the same rows, in the same order (build the context from "
            "the very inputs that were harvested).")
    check_input_dim = getattr(context, "check_input_dim", None)
    if check_input_dim is not None:
        check_input_dim(input_dim)  # an `ImageContext` whose rows are the pixels
    return context


def _check_targets(model, targets, num_rows):
    """`targets` checked as a transcoder's `y`, row for row with `x`."""
    if targets is None:
        return None
    if model_type(model) != "transcoder":
        raise ValueError(
            "`targets` are the `y` a transcoder reconstructs from `x`; this model "
            f"({model_type(model)}) reconstructs `x` itself: pass targets=None. "
            f"Received: targets for model '{model.name}'")
    if not isinstance(targets, ActivationStore):
        targets = np.asarray(targets)
    width = (targets.input_dim if isinstance(targets, ActivationStore)
             else (targets.shape[-1] if targets.ndim else None))
    if width != model.output_dim:
        raise ValueError(
            f"`targets` must hold the transcoder's targets `y`, {model.output_dim} "
            f"values a row (its output_dim). Received: targets of width {width}")
    targets, target_rows = activation_rows.check_rows(targets, model.output_dim, "targets")
    if target_rows != num_rows:
        raise ValueError(
            f"`targets` must hold one row per row of `x` ({num_rows}), in the same "
            f"order. Received: {target_rows} rows of targets")
    return targets


def select_latents(stats, num_latents):
    """The latents given a page: those that fired, the non-dense ones first,
    each group by total activation `sum_n f_i(x_n)`, largest first."""
    fired = np.flatnonzero(stats.fire_count > 0)
    dense = stats.frequency[fired] > DENSE_THRESHOLD
    order = np.lexsort((fired, -stats.total[fired], dense))
    return fired[order][:num_latents]


def _examples_of(stats, latent):
    top_rows, top_values = stats.top_examples(latent)
    groups = stats.quantile_samples(latent, QUANTILE_GROUPS, PER_GROUP)
    return [(top_rows[:TOP_EXAMPLES], top_values[:TOP_EXAMPLES])] + groups[::-1]


def _pages(model, x, stats, selected, context, batch_size):
    """The JSON of each selected latent's page."""
    shown = {int(i): _examples_of(stats, i) for i in selected}
    known, pairs = {}, []
    for latent, sections in shown.items():
        for rows, values in sections:
            for row, value in zip(rows.tolist(), values.tolist()):
                known[(row, latent)] = value
                pairs.extend((int(r), latent) for r in context.window_rows(row))
    unknown = sorted({pair for pair in pairs if pair not in known})
    if unknown:
        found = pair_activations(model, x, [r for r, _ in unknown],
                                 [i for _, i in unknown], batch_size)
        known.update(zip(unknown, found.tolist()))
    pixel_rows = sorted({r for r, _ in known}) if context.kind == "image" and getattr(
        context, "images", 0) is None else []
    pixels = dict(zip(pixel_rows, read_rows(x, pixel_rows))) if pixel_rows else {}
    decoder = decoder_rows(model)  # (latent_dim, output_dim): the output space
    neighbors = nearest_latents(decoder, np.asarray(selected, "int64"))
    transcoder = model_type(model) == "transcoder"
    names = ["top activations"] + [
        f"quantile {100 * g // QUANTILE_GROUPS}-{100 * (g + 1) // QUANTILE_GROUPS}%"
        for g in range(QUANTILE_GROUPS)][::-1]
    pages = {}
    for latent, near in zip(shown, neighbors):
        sections = []
        for name, (rows, _) in zip(names, shown[latent]):
            examples = []
            for row in rows.tolist():
                window = context.window_rows(row)
                examples.append(context.example(
                    row, window, [known[(int(r), latent)] for r in window],
                    pixels=[pixels[row]] if row in pixels else None))
            sections.append({"name": name, "examples": examples})
        histogram = stats.histogram[latent]
        nonzero = np.flatnonzero(histogram)
        pages[str(latent)] = {
            "latent": latent, "count": int(stats.fire_count[latent]),
            "frequency": float(f"{stats.frequency[latent]:.4g}"),
            "mean": float(f"{stats.mean_activation[latent]:.4g}"),
            "max": float(f"{stats.max_activation[latent]:.4g}"),
            "histogram": {"first": int(nonzero[0]),
                          "counts": histogram[nonzero[0]:nonzero[-1] + 1].tolist()},
            "sections": sections, "neighbors": near,
            "decoder_image": context.decoder_image(decoder[latent]),
        }
        if transcoder:
            pages[str(latent)]["top_outputs"] = top_outputs(decoder[latent])
    return pages


def feature_dashboard(model, x, output_dir, context=None, num_latents=100,
                      batch_size=1024, progress=True, overwrite=False, targets=None):
    """Writes a static HTML report of `model`'s latents on `x` to `output_dir`.

    One streaming pass of `x` through the SAE (`collect_statistics`) gives,
    per latent `i` over the `N` rows (`f_i` its activation):

    ```
    frequency_i = #{n : f_i(x_n) > 0} / N        (dead: 0; dense: > 0.1)
    mean_i      = sum_n f_i(x_n) / #{n : f_i(x_n) > 0}
    max_i       = max_n f_i(x_n)
    ```

    its activation histogram, its top rows and a uniform sample of the rows
    where it fires, in memory bounded independently of `N`; and the L0
    histogram, FVU and shrinkage (as `core_metrics`). The report is one
    folder holding `index.html` (all data, script and style inline: it
    opens from disk in any browser, offline) and `summary.json`:

    * the overview: L0 and log10 feature-density histograms, dead and
      dense counts, FVU, shrinkage, and a table of every latent (paged,
      sortable by frequency, mean and max activation, searchable by index
      or, for text, by its top tokens);
    * a page for each of the `num_latents` most interesting latents (those
      that fired, the non-dense first, by total activation): its
      activation histogram (log-spaced bins), its top examples, examples
      from each quartile of its activations, its nearest latents by
      decoder cosine; with a `TokenContext`, each example is the text
      around the token, every token shaded by the latent's activation;
      with an `ImageContext`, the images, and the decoder row as an image.

    Transcoders and crosscoders work too. A transcoder's latents come from
    its input `x` (the examples are rows of `x`); its decoder writes in the
    output space (`output_dim` wide, any width): the neighbours, the
    decoder image and the page's "top output features" (the `y` features
    of largest `|W_dec[i, j]|`) are there, and FVU and shrinkage measure
    `y_hat` against `targets` (`y`); without `targets` they are left out
    (n/a). A crosscoder's overview table and pages show each latent's
    decoder norm in every layer (`crosscoder_decoder_norms`), and its
    overview one FVU per layer.

    Files in `output_dir` other than those two are never touched. A file of
    either name that no dashboard wrote stops the call (`FileExistsError`)
    before any work, and so does an earlier dashboard's report unless
    `overwrite=True` (the two files of a report carry the same random
    report id: see `output.py`). Every argument is checked before the pass:
    among others, an empty `output_dir`, an `ImageContext` whose images are
    the rows but not of their width, and an SAE with a NaN or Inf weight
    (named in the `ValueError`) are refused.

    Args:
        model: a `SparseAutoencoder` (outputs `latents`, `reconstruction`).
        x: `(num_rows, input_dim)` float activations, or an `ActivationStore`.
        output_dir: the report's folder (created if needed; not empty:
            `"."` for the current folder).
        context: `TokenContext` (text), `ImageContext` (images) or `None`
            (examples shown as row indices).
        num_latents: int, the number of latents given a page.
        batch_size: int, rows through the SAE at a time.
        progress: bool, show a Keras progress bar during the pass.
        overwrite: bool, replace a report an earlier dashboard wrote in
            `output_dir` (without it, such a report raises `FileExistsError`).
        targets: `None`, or for a transcoder `(num_rows, output_dim)` float
            targets `y` (an array or an `ActivationStore`), row `n` the
            target of `x`'s row `n`: FVU and shrinkage are measured on them.

    Returns:
        The `pathlib.Path` of `index.html`.

    Example:

    >>> import tempfile
    >>> import gated_sae_layers as gsl
    >>> sae = gsl.build_sae("topk", 8, 16, k=2)
    >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    >>> path = feature_dashboard(sae, x, tempfile.mkdtemp(), num_latents=4,
    ...                          progress=False)
    >>> path.name, json.loads((path.parent / "summary.json").read_text())["l0"]
    ('index.html', 2.0)
    """
    folder = output.check_output_dir(output_dir, overwrite)
    if isinstance(num_latents, bool) or not isinstance(num_latents, numbers.Integral):
        raise TypeError(
            "`num_latents` must be a positive integer (the latents given a page). "
            f"Received: num_latents={num_latents!r}")
    num_latents = check_positive_int(int(num_latents), "num_latents")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True or False. Received: progress={progress!r}")
    x, num_rows = activation_rows.check_rows(x, model.input_dim)
    context = _check_context(context, num_rows, model.input_dim)
    targets = _check_targets(model, targets, num_rows)
    kind = model_type(model)
    activation_rows.check_finite_weights(
        model, "its report would hold NaN (which JSON cannot) instead of activations")

    stats, fidelity = collect_statistics(model, x, batch_size, top_k=TOP_EXAMPLES,
                                         sample_size=SAMPLE_SIZE, progress=progress,
                                         targets=targets)
    selected = select_latents(stats, num_latents)
    pages = _pages(model, x, stats, selected, context, batch_size)
    density_counts, density_edges = density_histogram(stats.frequency)
    l0_counts = stats.l0_histogram[:np.flatnonzero(stats.l0_histogram)[-1] + 1]
    summary = {
        "generator": output.MARKER, "report_id": output.new_report_id(),
        "model": model.name, "num_rows": num_rows,
        "model_type": kind, "latent_dim": model.latent_dim,
        "input_dim": model.input_dim, "output_dim": model.output_dim,
        "l0": fidelity["l0"], "fvu": _finite(fidelity["fvu"]),
        "shrinkage": _finite(fidelity["shrinkage"]),
        "dead": int((stats.fire_count == 0).sum()),
        "dense": int((stats.frequency > DENSE_THRESHOLD).sum()),
        "dense_threshold": DENSE_THRESHOLD, "pages": [int(i) for i in selected],
    }
    if kind == "crosscoder":
        summary["num_layers"] = len(fidelity["fvu_layers"])
        summary["fvu_layers"] = [_finite(v) for v in fidelity["fvu_layers"]]
    labels = None
    if context.kind == "text":
        labels = [context.label(stats.top.row[i][:5][stats.top.row[i][:5] >= 0])
                  for i in range(model.latent_dim)]
    data = {
        "summary": summary, "kind": context.kind,
        "l0_histogram": l0_counts.tolist(),
        "density": {"counts": density_counts.tolist(), "edges": density_edges.tolist()},
        "histogram_bins": {"log10_low": LOG10_LOW, "per_decade": BINS_PER_DECADE},
        "latents": {"frequency": _round(stats.frequency),
                    "mean": _round(stats.mean_activation),
                    "max": _round(stats.max_activation), "label": labels},
        "pages": pages,
    }
    if kind == "crosscoder":
        # Per latent, its decoder norm in each layer (what the pages print).
        data["layer_norms"] = layer_norms(model)
    if context.kind == "image":
        # `[width, height]` in CSS pixels, the image's aspect ratio kept.
        data["image_size"] = {"example": context.display_size(EXAMPLE_IMAGE_BOX),
                              "decoder": context.display_size(DECODER_IMAGE_BOX)}
    index = output.write_file(folder, output.INDEX, render_html(data))
    output.write_file(folder, output.SUMMARY, json.dumps(summary, indent=1))
    return index
