"""Evaluation refuses bad arguments up front, in the kit's words (issue 20, item 9).

Each case below used to fail late (after a full pass over the data) or in
another library's words (TensorFlow's `FailedPreconditionError`, sklearn's
or numpy's messages, `'str' object is not callable`). A pass over the data
here fails the test: `no_pass` replaces the row and example batching of
`activations.rows` by a function that raises.
"""

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers import cli
from gated_sae_layers.activations import ActivationStore
from gated_sae_layers.evaluation import (
    SplicedEvaluation, create_writer, evaluate_sae, k_sparse_probe, spliced_metrics,
    stratified_split, write_metrics)
from tests.helpers_hostile import refuse_passes, small_topk_sae

ROWS, INPUT_DIM = 40, 8
X = np.random.default_rng(0).normal(size=(ROWS, INPUT_DIM)).astype("float32")
LABELS = np.arange(ROWS) % 2
INPUTS = np.random.default_rng(1).normal(size=(12, 6)).astype("float32")


@pytest.fixture
def no_pass(monkeypatch):
    """Any pass over the rows (or the host model's inputs) raises `PassOverData`."""
    refuse_passes(monkeypatch, "gated_sae_layers.activations.rows.row_batches",
                  "gated_sae_layers.activations.rows.example_batches")


@pytest.fixture(scope="module")
def sae():
    return small_topk_sae(INPUT_DIM)


@pytest.fixture(scope="module")
def host():
    keras.utils.set_random_seed(3)
    x = keras.Input((6,))
    hidden = keras.layers.Dense(INPUT_DIM, activation="relu", name="hidden")(x)
    return keras.Model(x, keras.layers.Dense(3, name="logits")(hidden))


def _loss(out, clean, y):
    return keras.losses.mean_squared_error(clean, out)


# ------------------------------------------------------------ log_dir
def test_log_dir_that_is_a_file_is_refused_before_any_pass(sae, tmp_path, no_pass):
    existing = tmp_path / "events.txt"
    existing.write_text("mine")
    under_a_file = existing / "logs"
    for log_dir in (existing, str(existing), under_a_file):
        with pytest.raises(NotADirectoryError, match=(
                r"`log_dir` must be a folder \(TensorBoard writes event files into "
                r"it\)\. Received: log_dir=.*events\.txt.*, a file")):
            evaluate_sae(sae, X, log_dir=log_dir)
        with pytest.raises(NotADirectoryError, match="`log_dir` must be a folder"):
            write_metrics({"l0": 1.0}, log_dir, step=0)
        with pytest.raises(NotADirectoryError, match="`log_dir` must be a folder"):
            create_writer(log_dir)
    assert existing.read_text() == "mine"


@pytest.mark.parametrize("log_dir, error", [("", ValueError), ("  ", ValueError),
                                            (3, TypeError)])
def test_log_dir_empty_or_not_a_path_is_refused(sae, log_dir, error, no_pass):
    with pytest.raises(error, match="`log_dir` must be a folder"):
        evaluate_sae(sae, X, log_dir=log_dir)


def test_spliced_evaluation_refuses_a_log_dir_that_is_a_file(host, tmp_path):
    existing = tmp_path / "file"
    existing.write_text("")
    with pytest.raises(NotADirectoryError, match="`log_dir` must be a folder"):
        SplicedEvaluation(10, host, "hidden", INPUTS, _loss, outputs=None,
                          log_dir=existing)


def _cli_evaluate_with_a_file_as_log_dir(sae, tmp_path):
    """`gated-sae evaluate` of `sae` on a store of `X`, `--log-dir` a file: its status."""
    store = ActivationStore.create(tmp_path / "store", INPUT_DIM, dtype="float32")
    store.append(X)
    store.close()
    sae.save(tmp_path / "sae.keras")
    (tmp_path / "logs").write_text("not a folder")
    return cli.main(["evaluate", str(tmp_path / "sae.keras"), "--store",
                     str(tmp_path / "store"), "--log-dir", str(tmp_path / "logs")])


def test_cli_evaluate_log_dir_that_is_a_file_is_one_line_not_a_traceback(
        sae, tmp_path, capsys):
    status = _cli_evaluate_with_a_file_as_log_dir(sae, tmp_path)
    error = capsys.readouterr().err
    assert status == 2
    assert "gated-sae: error: `log_dir` must be a folder" in error or \
        "--log-dir" in error
    assert "Traceback" not in error


def test_cli_evaluate_log_dir_that_is_a_file_fails_before_any_pass(
        sae, tmp_path, capsys, no_pass):
    status = _cli_evaluate_with_a_file_as_log_dir(sae, tmp_path)
    assert status == 2 and "--log-dir" in capsys.readouterr().err


# ------------------------------------------------------------ labels
@pytest.mark.parametrize("bad, shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_float_labels_with_nan_or_inf_are_refused_before_any_pass(sae, bad, shown, no_pass):
    labels = LABELS.astype("float64")
    labels[[3, 7]] = bad
    message = (r"`labels` must be class labels, and NaN or Inf is no class\. Received: "
               rf"2 such entries, the first labels\[3\]={shown}")
    with pytest.raises(ValueError, match=message):
        evaluate_sae(sae, X, labels=labels)
    with pytest.raises(ValueError, match=message):
        k_sparse_probe(sae, X, labels, ks=(1,))
    with pytest.raises(ValueError, match=message):
        stratified_split(labels)


@pytest.mark.parametrize("labels, error, match", [
    (np.array([0, 1] * 19 + [None, 1], dtype=object), ValueError,
     r"`labels` must be class labels, and None is no class\. Received: 1 such entries, "
     r"the first labels\[38\]=None"),
    (np.array([0, 1] * 19 + [float("nan"), 1], dtype=object), ValueError,
     r"NaN or Inf is no class.*labels\[38\]=nan"),
    (np.array([0, "a"] * 20, dtype=object), TypeError,
     r"`labels` must all be of one kind that sorts \(ints, or strings\).*"
     r"Received: int and str"),
    (np.array([{}] * 40, dtype=object), TypeError,
     r"`labels` must all be of one kind that sorts.*Received: dict"),
])
def test_object_labels_that_do_not_sort_are_refused_before_any_pass(
        sae, labels, error, match, no_pass):
    with pytest.raises(error, match=match):
        evaluate_sae(sae, X, labels=labels)
    with pytest.raises(error, match=match):
        k_sparse_probe(sae, X, labels, ks=(1,))


def test_evaluate_sae_checks_the_classes_before_the_core_pass(sae, no_pass):
    with pytest.raises(ValueError, match="at least 2 classes"):
        evaluate_sae(sae, X, labels=np.zeros(ROWS, "int64"))


def test_good_labels_still_work(sae):
    strings = np.where(LABELS == 1, "yes", "no").astype(object)
    result = k_sparse_probe(sae, X, strings, ks=(1,))
    assert result["probe_classes"].tolist() == ["yes"]
    floats = k_sparse_probe(sae, X, LABELS.astype("float32") + 0.5, ks=(1,))
    assert floats["probe_classes"].tolist() == [1.5]


# ------------------------------------------------------------ seed
@pytest.mark.parametrize("seed, error, match", [
    ("a", TypeError, r"`seed` must be an integer from 0 to 2\*\*32 - 1\. "
                     r"Received: seed='a' of type str"),
    (1.5, TypeError, "Received: seed=1.5 of type float"),
    (True, TypeError, "Received: seed=True of type bool"),
    (-1, ValueError, "Received: seed=-1"),
    (2**32, ValueError, "Received: seed=4294967296"),
])
def test_probe_seed_is_checked_before_any_pass(sae, seed, error, match, no_pass):
    with pytest.raises(error, match=match):
        k_sparse_probe(sae, X, LABELS, ks=(1,), seed=seed)
    with pytest.raises(error, match=match):
        stratified_split(LABELS, seed=seed)


def test_probe_refuses_an_sae_with_nan_weights_before_any_pass(no_pass):
    broken = gsl.build_sae("topk", INPUT_DIM, 16, k=2)
    kernel = np.array(broken.decoder.kernel)
    kernel[2, 3] = np.nan
    broken.decoder.kernel.assign(kernel)
    with pytest.raises(ValueError, match=(
            r"The SAE's weight `.*decoder.*kernel` holds NaN or Inf \(1 of 128 values\)")):
        k_sparse_probe(broken, X, LABELS, ks=(1,))


# ------------------------------------------------------------ splicing
@pytest.mark.parametrize("options, error, match", [
    ({"loss_fn": "mse"}, TypeError,
     r"`loss_fn` must be callable: loss_fn\(outputs, clean_outputs, targets\) -> "
     r"\(batch,\) losses\. Received: loss_fn='mse' of type str"),
    ({"loss_fn": None}, TypeError, "Received: loss_fn=None"),
    ({"outputs": "logs"}, ValueError, "Received: outputs='logs'"),
    ({"batch_size": 0}, ValueError, "Received: batch_size=0"),
    ({"model": "host"}, TypeError, r"`model` must be a keras\.Model.*Received: model='host'"),
])
def test_spliced_metrics_checks_its_arguments_before_any_forward_pass(
        host, sae, options, error, match, no_pass):
    arguments = {"model": host, "layer": "hidden", "sae": sae, "inputs": INPUTS,
                 "loss_fn": _loss, **options}
    with pytest.raises(error, match=match):
        spliced_metrics(**arguments)
    splice = {k: v for k, v in arguments.items() if k != "sae"}
    with pytest.raises(error, match=match):
        evaluate_sae(sae, X, splice=splice)
