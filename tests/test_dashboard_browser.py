"""The feature dashboard in a real browser: headless Chromium opens the report from disk.

Needs `selenium` (the `test` extra) and Debian's `chromium` and
`chromium-driver` (`.ci/run` installs them); skips, saying which is
missing, where they cannot be found. Selenium Manager is never asked for
a driver: the Service names chromedriver's path.
"""

import json
import pathlib
import re
import shutil
import tempfile

import numpy as np
import pytest

import gated_sae_layers as gsl

CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,1400")
WORDS = ("the", "file", "return", "value", "list", "open", "read", "write", "sort", "key",
         "path", "string", "number", "error", "module", "object", "class", "method")


def _find(*names):
    for name in names:
        path = shutil.which(name) or (name if pathlib.Path(name).is_file() else None)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed: pip install selenium")
    from selenium.webdriver.chrome.service import Service

    chromium = _find("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
    driver_path = _find("chromedriver", "/usr/bin/chromedriver",
                        "/usr/lib/chromium/chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("headless Chromium is not installed here (Debian: apt-get install "
                    f"chromium chromium-driver); chromium={chromium}, "
                    f"chromedriver={driver_path}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
    for argument in CHROMIUM_ARGS + (f"--user-data-dir={profile}",):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class _Vocabulary:
    def id_to_token(self, token_id):
        word = WORDS[token_id % len(WORDS)]
        return "##s" if token_id % 7 == 0 else word


@pytest.fixture(scope="module")
def text_report(tmp_path_factory):
    sae = gsl.build_sae("topk", 8, 64, k=4)
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, 200, size=(40, 16))
    context = gsl.TokenContext.from_inputs(
        {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}, _Vocabulary(),
        window=5)
    x = rng.normal(size=(context.num_rows, 8)).astype("float32")
    folder = tmp_path_factory.mktemp("text_report")
    index = gsl.feature_dashboard(sae, x, folder, context, num_latents=10, progress=False)
    text = index.read_text()
    start = text.index('id="dashboard-data">') + len('id="dashboard-data">')
    return index, json.loads(text[start:text.index("</script>", start)])


def _wait(driver, css, count=1):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: len(d.find_elements("css selector", css)) >= count)
    return driver.find_elements("css selector", css)


def _table_latents(driver):
    return [int(row.get_attribute("data-latent"))
            for row in driver.find_elements("css selector", "#latent-table tbody tr")]


def _order(data, key, descending):
    values = data["latents"][key]
    sign = -1 if descending else 1
    return sorted(range(len(values)), key=lambda i: (sign * values[i], i))


def _alpha(style):
    match = re.search(r"rgba\([^)]*,\s*([0-9.]+)\)", style)
    return float(match.group(1)) if match else 1.0


def test_the_report_works_in_chromium(browser, text_report, tmp_path):
    index, data = text_report
    browser.get(index.resolve().as_uri())
    _wait(browser, "#latent-table tbody tr")

    # The overview: cards, both histograms, the first page of the table.
    assert len(browser.find_elements("css selector", ".card")) == 8
    assert browser.find_elements("css selector", "#l0-histogram rect.bar")
    assert len(browser.find_elements("css selector", "#density-histogram rect.bar")) == 40
    assert _table_latents(browser) == _order(data, "frequency", True)[:50]
    assert browser.find_element("id", "page-info").text == "1-50 of 64 latents"

    # Sorting changes the order: by max activation, then ascending.
    button = browser.find_element("css selector", "th button[data-sort='max']")
    button.click()
    assert _table_latents(browser) == _order(data, "max", True)[:50]
    browser.find_element("css selector", "th button[data-sort='max']").click()
    assert _table_latents(browser) == _order(data, "max", False)[:50]
    browser.find_element("id", "next").click()
    assert browser.find_element("id", "page-info").text == "51-64 of 64 latents"
    assert _table_latents(browser) == _order(data, "max", False)[50:]

    # Search by index, then by a token of the latents' labels.
    search = browser.find_element("id", "search")
    search.send_keys("7")
    assert _table_latents(browser) == [7]
    search.clear()
    word = next(w for w in WORDS if any(w in label for label in data["latents"]["label"]))
    search.send_keys(word)
    expected = sorted((i for i, label in enumerate(data["latents"]["label"]) if word in label),
                      key=lambda i: (data["latents"]["max"][i], i))
    assert _table_latents(browser) == expected[:50] and 0 < len(expected) < 64

    # A latent's page, reached through its link: examples with shaded tokens.
    latent = data["summary"]["pages"][0]
    search.clear()
    search.send_keys(str(latent))
    browser.find_element("css selector", f"a[href='#latent-{latent}']").click()
    _wait(browser, "#latent-title")
    page = data["pages"][str(latent)]
    assert browser.find_element("id", "latent-title").text.startswith(f"Latent {latent}")
    sections = browser.find_elements("css selector", ".section")
    assert len(sections) == len(page["sections"]) == 5
    examples = browser.find_elements("css selector", ".section .example")
    assert len(examples) == sum(len(s["examples"]) for s in page["sections"]) > 0
    first = page["sections"][0]["examples"][0]
    tokens = examples[0].find_elements("css selector", "span.tok")
    assert len(tokens) == len(first["tokens"])
    centers = browser.find_elements("css selector", ".section .example span.tok.center")
    assert len(centers) == len(examples)
    assert all(_alpha(c.get_attribute("style")) > 0 for c in centers)
    top_center = centers[0]
    assert _alpha(top_center.get_attribute("style")) == pytest.approx(
        min(first["acts"][first["center"]] / page["max"], 1.0), abs=2e-3)
    assert browser.find_elements("css selector", "#activation-histogram rect.bar")
    browser.save_screenshot(str(tmp_path / "dashboard_text.png"))

    browser.find_element("id", "back").click()
    _wait(browser, "#latent-table tbody tr")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    assert (tmp_path / "dashboard_text.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _open_image_report(browser, tmp_path, shape):
    """Opens the first latent's page of an image report (random images of
    `shape`, a TopK SAE) once its images are there; returns the examples' images."""
    width = int(np.prod(shape))
    sae = gsl.build_sae("topk", width, 12, k=3)
    x = np.random.default_rng(1).random((200, width)).astype("float32")
    index = gsl.feature_dashboard(sae, x, tmp_path / "report", gsl.ImageContext(shape),
                                  num_latents=3, progress=False)
    latent = json.loads((tmp_path / "report" / "summary.json").read_text())["pages"][0]
    browser.get(index.resolve().as_uri() + f"#latent-{latent}")
    images = _wait(browser, ".section .img img")
    _wait(browser, "#decoder-image img")
    return images


def test_an_image_report_shows_images_in_chromium(browser, tmp_path):
    images = _open_image_report(browser, tmp_path, (4, 4))
    loaded = browser.execute_script(
        "return Array.from(document.images).map(function (i) { return i.naturalWidth; });")
    assert len(loaded) == len(images) + 1 and all(width == 4 for width in loaded)
    browser.save_screenshot(str(tmp_path / "dashboard_image.png"))
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_a_non_square_image_keeps_its_aspect_ratio_in_chromium(browser, tmp_path):
    """Issue 20: a 4 x 8 image was drawn into an 84 x 84 square (pixels twice
    as tall as wide), and its decoder row into 150 x 150."""
    _open_image_report(browser, tmp_path, (4, 8))
    sizes = browser.execute_script(
        "return Array.from(document.images).map(function (i) { return [i.naturalWidth, "
        "i.naturalHeight, i.clientWidth, i.clientHeight, i.complete]; });")
    assert len(sizes) > 1
    for natural_width, natural_height, width, height, complete in sizes:
        assert complete and (natural_width, natural_height) == (8, 4)
        assert width / height == pytest.approx(natural_width / natural_height, rel=0.02)
    decoder = browser.find_element("css selector", "#decoder-image img")
    assert (decoder.get_property("clientWidth"), decoder.get_property("clientHeight")) == (150, 75)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
