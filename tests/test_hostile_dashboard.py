"""The feature dashboard against hostile input (issue 20, items 9, 10, 11, 13).

* arguments that cannot make a report are refused before any pass over the
  rows and before any file is written: an `ImageContext` whose image is not
  the width of the rows, an SAE with NaN/Inf weights, an empty `output_dir`;
* a file is replaced only if a dashboard wrote it: `index.html` and
  `summary.json` carry the same random report id, in places a user's file
  does not hold them by accident;
* a non-square image keeps its aspect ratio on the page (the browser check
  is in `tests/test_dashboard_browser.py`).
"""

import json
import re

import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers import cli
from gated_sae_layers.dashboard import ImageContext, feature_dashboard, output
from gated_sae_layers.dashboard._script import SCRIPT
from gated_sae_layers.dashboard._style import STYLE
from tests.helpers_hostile import refuse_passes, small_topk_sae

INPUT_DIM = 8
X = np.random.default_rng(0).normal(size=(60, INPUT_DIM)).astype("float32")


@pytest.fixture
def no_pass(monkeypatch):
    """Any pass over the rows raises `PassOverData`."""
    refuse_passes(monkeypatch, "gated_sae_layers.activations.rows.row_batches")


@pytest.fixture(scope="module")
def sae():
    return small_topk_sae(INPUT_DIM)


def _report_data(index):
    text = index.read_text()
    start = text.index('id="dashboard-data">') + len('id="dashboard-data">')
    return json.loads(text[start:text.index("</script>", start)])


# ------------------------------------------------------------ item 9: checked up front
@pytest.mark.parametrize("shape", [(3, 3), (2, 2, 1), (1, 9)])
def test_image_shape_other_than_the_row_width_is_refused_before_any_pass(
        sae, tmp_path, shape, no_pass):
    pixels = int(np.prod(shape))
    with pytest.raises(ValueError, match=(
            rf"`image_shape` must hold one pixel per value of a row of `x` \(8\), since "
            rf"`images` is None \(the rows are the pixels\)\. Received: "
            rf"image_shape={re.escape(str(shape))}, {pixels} pixels")):
        feature_dashboard(sae, X, tmp_path / "report", ImageContext(shape), progress=False)
    assert not (tmp_path / "report").exists()


def test_image_context_checks_the_width_itself():
    context = ImageContext((2, 4))
    context.check_input_dim(8)
    with pytest.raises(ValueError, match=r"Received: image_shape=\(2, 4\), 8 pixels"):
        context.check_input_dim(9)
    ImageContext((3, 3), images=np.zeros((5, 9))).check_input_dim(8)  # other pixels: any width


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_an_sae_with_non_finite_weights_is_refused_naming_the_weight(tmp_path, bad, no_pass):
    broken = gsl.build_sae("topk", INPUT_DIM, 16, k=2)
    bias = np.array(broken.decoder.bias)
    bias[[1, 5]] = bad
    broken.decoder.bias.assign(bias)
    with pytest.raises(ValueError, match=(
            r"The SAE's weight `[^`]*decoder[^`]*bias` holds NaN or Inf \(2 of 8 values\): "
            r"its report would hold NaN")):
        feature_dashboard(broken, X, tmp_path / "report", progress=False)
    assert not (tmp_path / "report").exists()


# ------------------------------------------------------------ item 11: empty output_dir
@pytest.mark.parametrize("output_dir", ["", "   ", "\t\n"])
def test_an_empty_output_dir_is_refused(sae, tmp_path, monkeypatch, output_dir, no_pass):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=(
            r"`output_dir` must be a folder path, not an empty one \(pass '\.' for the "
            r"current folder\)\. Received: output_dir=")):
        feature_dashboard(sae, X, output_dir, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_current_folder_named_explicitly_still_works(sae, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    index = feature_dashboard(sae, X, ".", num_latents=2, progress=False)
    assert index.resolve() == (tmp_path / "index.html").resolve()


# ------------------------------------------------------------ item 10: the report id
USERS_PAGES = [
    "<html><body>Made with gated_sae_layers.dashboard, then edited by hand.</body></html>",
    # The old marker, exactly as a dashboard wrote it.
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="generator" content="gated_sae_layers.dashboard">\n</head></html>',
]


@pytest.mark.parametrize("page", USERS_PAGES)
def test_a_users_index_html_mentioning_the_dashboard_is_never_overwritten(
        sae, tmp_path, page):
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "index.html").write_text(page)
    with pytest.raises(FileExistsError, match="no feature dashboard wrote"):
        feature_dashboard(sae, X, folder, num_latents=2, progress=False, overwrite=True)
    assert (folder / "index.html").read_text() == page
    assert sorted(p.name for p in folder.iterdir()) == ["index.html"]


def test_a_users_summary_json_naming_the_generator_is_never_overwritten(sae, tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    mine = json.dumps({"generator": output.MARKER, "report_id": "0" * 32, "notes": "mine"})
    (folder / "summary.json").write_text(mine)
    with pytest.raises(FileExistsError, match="no feature dashboard wrote"):
        feature_dashboard(sae, X, folder, num_latents=2, progress=False, overwrite=True)
    assert (folder / "summary.json").read_text() == mine


def test_the_two_files_must_carry_the_same_report_id(sae, tmp_path):
    first = feature_dashboard(sae, X, tmp_path / "a", num_latents=2, progress=False)
    second = feature_dashboard(sae, X, tmp_path / "b", num_latents=2, progress=False)
    ids = [json.loads((index.parent / "summary.json").read_text())["report_id"]
           for index in (first, second)]
    assert ids[0] != ids[1] and all(re.fullmatch("[0-9a-f]{32}", i) for i in ids)
    for index, report_id in zip((first, second), ids):
        assert output.report_id(index) == output.report_id(
            index.parent / "summary.json") == report_id
        assert output.written_by_a_dashboard(index)
    # One report's page beside another's summary: neither is taken as ours.
    (tmp_path / "a" / "summary.json").write_bytes((tmp_path / "b" / "summary.json").read_bytes())
    assert not output.written_by_a_dashboard(first)
    with pytest.raises(FileExistsError, match="no feature dashboard wrote"):
        feature_dashboard(sae, X, tmp_path / "a", num_latents=2, progress=False,
                          overwrite=True)
    # A page alone (its summary deleted) cannot be matched: it is kept.
    (tmp_path / "a" / "summary.json").unlink()
    with pytest.raises(FileExistsError, match="no feature dashboard wrote"):
        feature_dashboard(sae, X, tmp_path / "a", num_latents=2, progress=False,
                          overwrite=True)
    # A matching pair is replaced, with a new id.
    again = feature_dashboard(sae, X, tmp_path / "b", num_latents=3, progress=False,
                              overwrite=True)
    assert output.report_id(again) not in (None, ids[1])


def _cli_inputs(sae, tmp_path):
    sae.save(tmp_path / "sae.keras")
    np.save(tmp_path / "x.npy", X)
    return ["dashboard", str(tmp_path / "sae.keras"), "--activations",
            str(tmp_path / "x.npy"), "--num-latents", "2", "--quiet"]


def test_cli_never_overwrites_a_users_index_html_mentioning_the_dashboard(
        sae, tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "index.html").write_text(USERS_PAGES[0])
    status = cli.main(_cli_inputs(sae, tmp_path) + ["--out", str(folder), "--overwrite"])
    assert status == 2 and "no feature dashboard wrote" in capsys.readouterr().err
    assert (folder / "index.html").read_text() == USERS_PAGES[0]


# ------------------------------------------------------------ item 13: aspect ratio
def test_a_non_square_image_keeps_its_aspect_ratio_on_the_page(tmp_path):
    sae = gsl.build_sae("topk", 32, 12, k=3)
    x = np.random.default_rng(1).random((80, 32)).astype("float32")
    index = feature_dashboard(sae, x, tmp_path, ImageContext((4, 8)), num_latents=2,
                              progress=False)
    data = _report_data(index)
    # Example boxes are 84 px and decoder boxes 150 px on their long side.
    assert data["image_size"] == {"example": [84, 42], "decoder": [150, 75]}
    # The style sheet fixes no image height, and the script no longer draws
    # the decoder row into a 150 x 150 square.
    image_rule = re.search(r"\.img img \{([^}]*)\}", STYLE).group(1)
    assert not re.search(r"(^|[^-])height:\s*\d", image_rule)
    assert not re.search(r"(^|[^-])width:\s*\d", image_rule)
    assert "height: 150px" not in SCRIPT and "height: 84px" not in STYLE
    assert "DATA.image_size" in SCRIPT


@pytest.mark.parametrize("shape, example, decoder", [
    ((28, 28), [84, 84], [150, 150]), ((4, 8), [84, 42], [150, 75]),
    ((8, 4), [42, 84], [75, 150]), ((1, 300), [84, 1], [150, 1]), ((3, 7, 1), [84, 36], [150, 64]),
])
def test_image_display_sizes_keep_the_ratio(shape, example, decoder):
    context = ImageContext(shape)
    assert context.display_size(84) == example
    assert context.display_size(150) == decoder


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, "\xff\xfe not json", "null",
                                  '{"generator": "gated_sae_layers.dashboard", '
                                  '"report_id": ["0"]}'])
def test_a_summary_json_that_is_no_summary_is_read_as_no_id(tmp_path, text):
    (tmp_path / "summary.json").write_text(text, encoding="latin-1")
    assert output.report_id(tmp_path / "summary.json") is None
