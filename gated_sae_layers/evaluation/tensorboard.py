"""Evaluation results to TensorBoard event files, written on the host.

The summaries are written with `tf.summary.write` and the metadata of
TensorBoard's scalar and histogram plugins: TensorFlow (a core dependency)
writes them without the `tensorboard` package, which is only needed to view
them (`tf.summary.scalar` itself needs it installed).
"""

import numbers
import os
import pathlib

import numpy as np

# Per-latent arrays written as histograms (over 30 equal bins of their range).
PER_LATENT_HISTOGRAMS = ("max_decoder_cosine", "encoder_decoder_cosine")


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "Writing TensorBoard summaries needs TensorFlow (`pip install "
            "tensorflow`), whatever the Keras backend.") from error
    return tf


def _metadata(tf, plugin):
    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin
    return metadata


def check_log_dir(log_dir):
    """`log_dir` as a `Path`: a folder, or a path where one can be created.

    Refuses, before any work, an empty path (it would mean the current
    folder), a path that is an existing file, and a path under one (where
    TensorFlow would fail with `FailedPreconditionError` only when writing).

    Example:

    >>> check_log_dir("")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `log_dir` must be a folder (...), not an empty path. Received: log_dir=''
    """
    expected = "`log_dir` must be a folder (TensorBoard writes event files into it)"
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(f"{expected}: a str or pathlib.Path. "
                        f"Received: log_dir={log_dir!r:.100} of type {type(log_dir).__name__}")
    if not os.fspath(log_dir).strip():
        raise ValueError(f"{expected}, not an empty path. Received: log_dir={log_dir!r}")
    folder = pathlib.Path(log_dir)
    existing = folder
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == folder else f", under {existing}"
        raise NotADirectoryError(
            f"{expected}. Received: log_dir={str(folder)!r}{where}, a file")
    return folder


def create_writer(log_dir):
    """A `tf.summary` file writer for `log_dir` (created if needed; checked
    by `check_log_dir`)."""
    check_log_dir(log_dir)
    return _tensorflow().summary.create_file_writer(os.fspath(log_dir))


def _histogram(tf, tag, counts, edges, step):
    buckets = np.stack([edges[:-1], edges[1:], counts], axis=1).astype("float64")
    tf.summary.write(tag, tf.constant(buckets), step=step,
                     metadata=_metadata(tf, "histograms"))


def write_metrics(metrics, writer, step, prefix="sae_eval"):
    """Writes an evaluation dict as TensorBoard summaries at `step`.

    Every real number becomes a scalar `"{prefix}/{key}"`; the
    `density_histogram` counts (with `density_bin_edges`) become the
    histogram `"{prefix}/log10_feature_density"` with exactly those bins;
    `max_decoder_cosine` and `encoder_decoder_cosine`, when present, become
    histograms over 30 equal bins of their range. Other arrays are skipped.

    Args:
        metrics: a dict, as from `evaluate_sae` or `core_metrics`.
        writer: a log folder, or a writer from `create_writer` (reuse one
            writer for many steps).
        step: int, the step the values belong to.
        prefix: the tags' first component.

    Returns:
        The writer, flushed.

    Example:

    >>> import tempfile
    >>> writer = write_metrics({"l0": 4.0, "fvu": 0.25}, tempfile.mkdtemp(), step=0)
    """
    tf = _tensorflow()
    if not hasattr(writer, "as_default"):
        writer = create_writer(writer)
    scalars = _metadata(tf, "scalars")
    step = int(step)
    with writer.as_default():
        for key, value in metrics.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                tf.summary.write(f"{prefix}/{key}", tf.constant(float(value), tf.float32),
                                 step=step, metadata=scalars)
        if "density_histogram" in metrics:
            _histogram(tf, f"{prefix}/log10_feature_density",
                       np.asarray(metrics["density_histogram"]),
                       np.asarray(metrics["density_bin_edges"]), step)
        for key in PER_LATENT_HISTOGRAMS:
            values = np.asarray(metrics.get(key, []), "float64")
            values = values[np.isfinite(values)]
            if values.size:
                counts, edges = np.histogram(values, bins=30)
                _histogram(tf, f"{prefix}/{key}", counts, edges, step)
    writer.flush()
    return writer
