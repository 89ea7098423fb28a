"""k-sparse probing (SAEBench): can a few latents tell the classes apart?"""

import numbers
import typing

import numpy as np

from gated_sae_layers._validation import check_k, check_positive_int
from gated_sae_layers.activations import rows as activation_rows

SKLEARN_MESSAGE = (
    "k-sparse probing needs scikit-learn: install it with "
    '`pip install "gated-sae-layers[data]"`.')


def _sklearn():
    try:
        from sklearn import linear_model, metrics, model_selection
    except ImportError as error:
        raise ImportError(SKLEARN_MESSAGE) from error
    return linear_model, metrics, model_selection


# sklearn's `random_state` takes ints in [0, 2**32 - 1].
MAX_SEED = 2**32 - 1


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            "`seed` must be an integer from 0 to 2**32 - 1. "
            f"Received: seed={seed!r} of type {type(seed).__name__}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(
            f"`seed` must be an integer from 0 to 2**32 - 1. Received: seed={seed!r}")
    return int(seed)


def _shown(value):
    return repr(value.item() if isinstance(value, np.generic) else value)


def _check_label_values(labels, name):
    """Raises unless `labels` (1-D) are classes that `np.unique` can sort:
    no NaN, Inf or None, and one kind of value (ints, or strings)."""
    if labels.dtype.kind in "fc":
        bad = np.flatnonzero(~np.isfinite(labels))
        what = "NaN or Inf"
    elif labels.dtype.kind == "O":
        missing = np.array([v is None for v in labels.tolist()], bool)
        not_finite = np.array([isinstance(v, (float, complex, np.floating))
                               and not np.isfinite(v) for v in labels.tolist()], bool)
        bad = np.flatnonzero(missing | not_finite)
        what = "None" if len(bad) and missing[bad[0]] else "NaN or Inf"
    elif labels.dtype.kind in "biuUS":
        return labels
    else:
        raise TypeError(
            f"`{name}` must hold class labels (ints or strings). "
            f"Received: {name}.dtype={labels.dtype}")
    if len(bad):
        raise ValueError(
            f"`{name}` must be class labels, and {what} is no class. Received: "
            f"{len(bad)} such entries, the first {name}[{bad[0]}]={_shown(labels[bad[0]])}")
    if labels.dtype.kind == "O":
        try:
            np.unique(labels)
        except TypeError:
            kinds = sorted({type(v).__name__ for v in labels.tolist()})
            raise TypeError(
                f"`{name}` must all be of one kind that sorts (ints, or strings), "
                f"to tell the classes apart. Received: {' and '.join(kinds)}") from None
    return labels


def _check_labels(labels, num_rows, name="labels"):
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != num_rows:
        raise ValueError(
            f"`{name}` must be 1-D with one entry per row of `x` ({num_rows}). "
            f"Received: {name}.shape={labels.shape}")
    return _check_label_values(labels, name)


def stratified_split(labels, test_fraction=0.2, seed=0, groups=None):
    """Row indices `(train, test)`, every class in both, in class proportions.

    Without `groups`: `sklearn.model_selection.train_test_split(...,
    stratify=labels)`, `ceil(test_fraction * N)` test rows. With `groups`
    (one id per row: the document, the image, ...): rows of one group stay
    on one side, the first fold of a shuffled `StratifiedGroupKFold` with
    `round(1 / test_fraction)` folds (then `test_fraction <= 0.5`).

    Args:
        labels: `(N,)` class labels (ints or strings), each class at least twice.
        test_fraction: float in `(0, 1)`.
        seed: int, the shuffling seed.
        groups: optional `(N,)` group ids.

    Returns:
        Two sorted int arrays of row indices.

    Example:

    >>> train, test = stratified_split([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], 0.5)
    >>> len(train), len(test)
    (5, 5)
    """
    _, _, model_selection = _sklearn()
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError("`labels` must be 1-D, one class label per row. "
                         f"Received: labels.shape={labels.shape}")
    _check_label_values(labels, "labels")
    seed = _check_seed(seed)
    if not (isinstance(test_fraction, float) and 0.0 < test_fraction < 1.0):
        raise ValueError("`test_fraction` must be a float in (0, 1). "
                         f"Received: test_fraction={test_fraction!r}")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        found = dict(zip(classes.tolist(), counts.tolist()))
        raise ValueError(
            "`labels` must hold at least 2 classes of at least 2 rows each, so that "
            f"both splits see every class. Received: class counts {found!r:.300}")
    rows = np.arange(len(labels))
    if groups is None:
        train, test = model_selection.train_test_split(
            rows, test_size=test_fraction, stratify=labels, random_state=seed)
    else:
        groups = _check_labels(groups, len(labels), "groups")
        folds = int(round(1.0 / test_fraction))
        if folds < 2 or len(np.unique(groups)) < folds:
            raise ValueError(
                f"With `groups`, `test_fraction` must be at most 0.5 and there must be "
                f"at least round(1 / test_fraction) = {folds} groups. Received: "
                f"test_fraction={test_fraction}, {len(np.unique(groups))} groups")
        splitter = model_selection.StratifiedGroupKFold(folds, shuffle=True,
                                                        random_state=seed)
        train, test = next(splitter.split(rows, labels, groups))
    for side, index in (("train", train), ("test", test)):
        if len(np.unique(labels[index])) != len(classes):
            raise ValueError(
                f"The {side} split lacks a class: give more rows (or groups) per class "
                f"or another `test_fraction`. Received: test_fraction={test_fraction}")
    return np.sort(train), np.sort(test)


def _encoded(model, x, batch_size):
    """Yields `(first row, latents)` batch by batch."""
    start = 0
    for batch in activation_rows.row_batches(x, batch_size):
        yield start, np.asarray(model.encode(batch, batch_size=batch_size), "float64")
        start += len(batch)


def _fit_score(modules, features, labels, train, test, seed):
    linear_model, metrics, _ = modules
    probe = linear_model.LogisticRegression(class_weight="balanced", max_iter=1000,
                                            random_state=seed)
    probe.fit(features[train], labels[train])
    return metrics.balanced_accuracy_score(labels[test], probe.predict(features[test]))


def k_sparse_probe(model, x, labels, ks=(1, 2, 5, 20), test_fraction=0.2, seed=0,
                   groups=None, batch_size=1024):
    """Held-out accuracy of logistic probes on the `k` most class-selective latents.

    SAEBench's sparse probing, with classes handled one-vs-rest. For each
    class `c` (one binary task "c or not"; a single task when there are two
    classes), on the train split only:

    ```
    score_i = | mean(f_i(x) : label = c) - mean(f_i(x) : label != c) |
    ```

    ranks the latents; a logistic regression (on the values as they are,
    as SAEBench: `C=1`, `max_iter=1000`; plus `class_weight="balanced"`)
    is fitted on the top `k`, and scored on the test split by balanced
    accuracy (the mean of the true positive and true negative rates: 0.5
    is chance for every task; on balanced binary data, as in SAEBench, it
    is the plain accuracy). Each reported number is the mean over the
    tasks. The same probe on all `input_dim` raw activations is the
    baseline. Latents are encoded in batches: the train split's class
    means first, then only the chosen columns are kept.

    Multiclass labels become one-vs-rest tasks, rather than pairs of
    classes, so that `C` classes give `C` tasks (not `C(C-1)/2`) and each
    task asks what SAEBench's binary tasks ask: is this concept present.

    Args:
        model: a `SparseAutoencoder`.
        x: `(N, input_dim)` float activations, or an `ActivationStore`
            (the raw probe holds all its rows in memory).
        labels: `(N,)` class labels (ints or strings).
        ks: ints in `[1, latent_dim]`, the probe sizes.
        test_fraction: float in `(0, 1)`, the held-out share (stratified;
            see `stratified_split`).
        seed: int, the split's and the solver's seed.
        groups: optional `(N,)` ids of rows that must stay on one side of
            the split (the tokens of one document).
        batch_size: int, rows encoded at a time.

    Returns:
        A dict: floats `probe_balanced_accuracy_k{k}` for each `k` and
        `probe_balanced_accuracy_raw`; arrays `probe_classes` (the positive
        class of each task), `probe_top_latents` `(tasks, max(ks))` (ranked
        latent indices per task) and `probe_task_accuracies`
        `(tasks, len(ks) + 1)` (columns: each `k`, then raw).

    Example:

    >>> import numpy as np
    >>> import gated_sae_layers as gsl
    >>> sae = gsl.build_sae("topk", 4, 8, k=2)
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 30)
    >>> x = (rng.normal(size=(60, 4)) + 3.0 * labels[:, None]).astype("float32")
    >>> result = k_sparse_probe(sae, x, labels, ks=(1, 2))
    >>> result["probe_balanced_accuracy_raw"] > 0.9, result["probe_top_latents"].shape
    (True, (1, 2))
    """
    return run_probe(model, plan_probe(model, x, labels, ks, test_fraction, seed, groups,
                                       batch_size))


class ProbePlan(typing.NamedTuple):
    """`k_sparse_probe`'s arguments, checked, and its split (`plan_probe`)."""

    x: object
    num_rows: int
    labels: np.ndarray
    ks: list
    seed: int
    batch_size: int
    train: np.ndarray
    test: np.ndarray


def plan_probe(model, x, labels, ks=(1, 2, 5, 20), test_fraction=0.2, seed=0,
               groups=None, batch_size=1024):
    """Checks every argument of `k_sparse_probe` and splits the rows, with no
    pass over `x`: `evaluate_sae` calls it before its first pass."""
    _sklearn()
    x, num_rows = activation_rows.check_rows(x, model.input_dim)
    labels = _check_labels(labels, num_rows)
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(ks, (int, np.integer)) or not len(ks):
        raise ValueError(f"`ks` must be a non-empty sequence of ints. Received: ks={ks!r}")
    ks = sorted({check_k(k, model.latent_dim, "ks") for k in ks})
    seed = _check_seed(seed)
    activation_rows.check_finite_weights(
        model, "its latents would be NaN, and no probe can be fitted on them")
    train, test = stratified_split(labels, test_fraction, seed, groups)
    return ProbePlan(x, num_rows, labels, ks, seed, batch_size, train, test)


def run_probe(model, plan):
    """`k_sparse_probe` for a `ProbePlan`: the passes over the rows and the fits."""
    modules = _sklearn()
    x, num_rows, labels, ks, seed, batch_size, train, test = plan
    classes = np.unique(labels)
    tasks = classes[1:] if len(classes) == 2 else classes
    is_train = np.zeros(num_rows, bool)
    is_train[train] = True

    class_sums = np.zeros((len(classes), model.latent_dim))
    class_index = np.searchsorted(classes, labels)
    for start, latents in _encoded(model, x, batch_size):
        chosen = is_train[start:start + len(latents)]
        np.add.at(class_sums, class_index[start:start + len(latents)][chosen],
                  latents[chosen])
    class_counts = np.bincount(class_index[train], minlength=len(classes))
    total, total_count = class_sums.sum(axis=0), class_counts.sum()
    top = []
    for task in tasks:
        c = np.searchsorted(classes, task)
        inside = class_sums[c] / class_counts[c]
        outside = (total - class_sums[c]) / (total_count - class_counts[c])
        top.append(np.argsort(-np.abs(inside - outside), kind="stable")[:ks[-1]])
    top = np.array(top)

    columns = np.unique(top)
    kept = np.empty((num_rows, len(columns)))
    for start, latents in _encoded(model, x, batch_size):
        kept[start:start + len(latents)] = latents[:, columns]
    raw = np.concatenate(list(activation_rows.row_batches(x, batch_size))).astype("float64")

    accuracies = np.empty((len(tasks), len(ks) + 1))
    for t, task in enumerate(tasks):
        binary = (labels == task).astype("int64")
        for j, k in enumerate(ks):
            features = kept[:, np.searchsorted(columns, top[t, :k])]
            accuracies[t, j] = _fit_score(modules, features, binary, train, test, seed)
        accuracies[t, -1] = _fit_score(modules, raw, binary, train, test, seed)
    result = {f"probe_balanced_accuracy_k{k}": float(accuracies[:, j].mean())
              for j, k in enumerate(ks)}
    result["probe_balanced_accuracy_raw"] = float(accuracies[:, -1].mean())
    result.update(probe_classes=np.asarray(tasks), probe_top_latents=top,
                  probe_task_accuracies=accuracies)
    return result
