"""Figures of a trained SAE. Needs matplotlib (`pip install "gated-sae-layers[viz]"`)."""

import numpy as np
from keras import ops

from gated_sae_layers._validation import check_positive_int


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "The plots of gated_sae_layers need matplotlib. Install it with "
            '`pip install "gated-sae-layers[viz]"`.'
        ) from error
    return plt


def _decoder_rows(model, image_shape):
    rows = np.asarray(ops.convert_to_numpy(model.decoder.kernel))
    if int(np.prod(image_shape)) != rows.shape[1]:
        raise ValueError(
            f"`image_shape` must have {rows.shape[1]} pixels (the model's "
            f"input_dim). Received: image_shape={tuple(image_shape)}"
        )
    return rows


def _rank_by_mean(codes, latent_dim, top):
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != latent_dim:
        raise ValueError(
            f"`codes` must have shape (num_examples, {latent_dim}). "
            f"Received: codes.shape={codes.shape}"
        )
    mean = codes.mean(axis=0)
    return codes, mean, np.argsort(mean)[::-1][:top]


def plot_decoder_gallery(model, codes, top_n=10, image_shape=(28, 28), vlim=None):
    """Shows the decoder rows of the `top_n` latents of largest mean activation.

    Args:
        model: a trained SAE whose input is an image flattened to `input_dim`.
        codes: `(num_examples, latent_dim)` latents used to rank features.
        top_n: the number of features shown.
        image_shape: the shape each decoder row is reshaped to, e.g. (8, 8)
            for `sklearn` digits. Default (28, 28).
        vlim: symmetric color limit; default the largest absolute weight shown.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    plt = _pyplot()
    top_n = check_positive_int(top_n, "top_n")
    rows = _decoder_rows(model, image_shape)
    _, mean, top = _rank_by_mean(codes, rows.shape[0], top_n)
    vlim = vlim or float(np.abs(rows[top]).max())
    fig, axes = plt.subplots(1, len(top), figsize=(1.6 * len(top), 2.0), squeeze=False)
    for ax, feature in zip(axes[0], top):
        ax.imshow(rows[feature].reshape(image_shape), cmap="RdBu_r", vmin=-vlim, vmax=vlim)
        ax.set_title(f"#{feature}\nmean {mean[feature]:.3f}", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"Decoder rows of the {len(top)} most active latents", fontsize=10)
    fig.tight_layout()
    return fig


def plot_feature_gallery(
    model, codes, X, labels, class_names=None, top_features=20, top_images=5,
    image_shape=(28, 28), feature_idx=None, vlim=None,
):
    """Decoder row beside the inputs that activate each feature most.

    A feature is tagged MONO when its `top_images` examples share a class
    and POLY otherwise.

    Args:
        model: a trained SAE over flattened images.
        codes: `(num_examples, latent_dim)` latents of `X`.
        X: `(num_examples, input_dim)` the inputs, aligned with `codes`.
        labels: `(num_examples,)` integer classes.
        class_names: class index to display name; default the index.
        top_features: the number of features (rows of the figure).
        top_images: the number of top-activating inputs per feature.
        image_shape: the image shape, e.g. (28, 28) or (8, 8).
        feature_idx: explicit features to show instead of the top by mean.
        vlim: symmetric color limit for the decoder rows.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    plt = _pyplot()
    top_features = check_positive_int(top_features, "top_features")
    top_images = check_positive_int(top_images, "top_images")
    rows = _decoder_rows(model, image_shape)
    codes, mean, top = _rank_by_mean(codes, rows.shape[0], top_features)
    X, labels = np.asarray(X), np.asarray(labels)
    if not len(X) == len(labels) == len(codes):
        raise ValueError(
            "`codes`, `X` and `labels` must have one row per example. Received: "
            f"{len(codes)}, {len(X)} and {len(labels)} rows"
        )
    if feature_idx is not None:
        top = np.asarray(feature_idx)[:top_features]
    names = class_names if class_names is not None else [
        str(c) for c in range(int(labels.max()) + 1)]
    vlim = vlim or float(np.abs(rows[top]).max())
    low, high = float(X.min()), float(X.max())
    fig, axes = plt.subplots(
        len(top), top_images + 2, figsize=(1.4 * (top_images + 2), 1.5 * len(top)),
        squeeze=False)
    for row, feature in enumerate(top):
        best = np.argsort(codes[:, feature])[::-1][:top_images]
        classes = {names[labels[i]] for i in best}
        tag = f"MONO: {next(iter(classes))}" if len(classes) == 1 else (
            f"POLY: {len(classes)} classes")
        axes[row, 0].text(0.5, 0.5, f"#{feature}\nmean {mean[feature]:.3f}\n{tag}",
                          ha="center", va="center", fontsize=7,
                          transform=axes[row, 0].transAxes)
        axes[row, 1].imshow(rows[feature].reshape(image_shape), cmap="RdBu_r",
                            vmin=-vlim, vmax=vlim)
        for col, index in enumerate(best):
            ax = axes[row, col + 2]
            ax.imshow(X[index].reshape(image_shape), cmap="gray", vmin=low, vmax=high)
            ax.set_title(f"{names[labels[index]]} ({codes[index, feature]:.2f})",
                         fontsize=6)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle("Decoder rows and top-activating inputs", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def plot_feature_density(density, bins=50):
    """Histogram of `log10` feature density (from `feature_density`).

    Dead latents (density 0) are counted in the title, not plotted.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    plt = _pyplot()
    density = np.asarray(density, "float64")
    alive = density[density > 0]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(np.log10(alive), bins=bins, color="#3070b0")
    ax.set_xlabel("log10(fraction of examples on which the latent fires)")
    ax.set_ylabel("latents")
    ax.set_title(f"Feature density ({density.size - alive.size} dead of {density.size})",
                 fontsize=10)
    fig.tight_layout()
    return fig
