"""SAEBench-lite (`gated_sae_layers.evaluation`) against brute-force numpy."""

import argparse
import json
import pathlib

import hypothesis
import keras
import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gated_sae_layers as gsl
from gated_sae_layers.evaluation import analysis
from gated_sae_layers.activations import ActivationStore
from gated_sae_layers.evaluation import (
    SplicedEvaluation, core_metrics, density_histogram, encoder_decoder_cosine,
    evaluate_sae, k_sparse_probe, kl_divergence, max_decoder_cosine, spliced_metrics,
    stratified_split)
from gated_sae_layers.cli.evaluate import add_evaluate_command, run_evaluate

RNG = np.random.default_rng(0)
X = (RNG.normal(size=(200, 8)) + np.linspace(-1, 1, 8)).astype("float32")
INPUTS = RNG.normal(size=(60, 6)).astype("float32")
TARGETS = np.arange(60) % 3


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def exact_sae():
    """A ReLU SAE with `f = [relu(x), relu(-x)]`, `x_hat = f @ [I; -I] = x` exactly."""
    sae = gsl.build_relu_sae(8, 16, sparsity_coefficient=1e-3)
    eye = np.eye(8, dtype="float32")
    sae.encoder.input_kernel.assign(np.concatenate([eye, -eye], axis=1))
    for variable, _ in sae.encoder.latent_parameters():
        variable.assign(np.zeros(variable.shape, "float32"))
    sae.decoder.kernel.assign(np.concatenate([eye, -eye], axis=0))
    sae.decoder.bias.assign(np.zeros(8, "float32"))
    return sae


@pytest.fixture(scope="module")
def gated_sae():
    """An untrained gated SAE with a non-zero `b_dec`: an imperfect reconstruction."""
    keras.utils.set_random_seed(5)
    sae = gsl.build_gated_sae(8, 16, 1e-3)
    sae.decoder.bias.assign(np.linspace(-0.5, 0.5, 8).astype("float32"))
    return sae


@pytest.fixture(scope="module")
def host():
    """`(logits_model, probabilities_model)` sharing layers, with an 8-wide 'hidden'."""
    keras.utils.set_random_seed(3)
    x = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    logits = keras.layers.Dense(3, name="logits")(hidden)
    return keras.Model(x, logits), keras.Model(x, keras.layers.Softmax()(logits))


def _cross_entropy(out, clean, y):
    return keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)


def _log_softmax(z):
    z = np.asarray(z, "float64")
    return z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(
        -1, keepdims=True)


def _kl(clean, other):
    p, q = _log_softmax(clean), _log_softmax(other)
    return float((np.exp(p) * (p - q)).sum(-1).mean())


def _events(folder):
    """`{tag: {step: value}}` of every summary in the event files under `folder`."""
    import tensorflow as tf

    found = {}
    for path in pathlib.Path(folder).rglob("events.out.tfevents*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
    return found


# ------------------------------------------------------------------ core
def test_core_metrics_match_numpy(gated_sae):
    result = core_metrics(gated_sae, X, batch_size=64, dense_threshold=0.3)
    out = gated_sae.predict_on_batch(X)
    f, x_hat, x = (np.asarray(out["latents"], "float64"),
                   np.asarray(out["reconstruction"], "float64"), X.astype("float64"))
    density = (f > 0).mean(axis=0)
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    cosine = (x * x_hat).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(x_hat, axis=1))
    expected = {
        "l0": (f > 0).sum(1).mean(), "fvu": fvu, "explained_variance": 1 - fvu,
        "cosine_similarity": cosine.mean(),
        "shrinkage": (x_hat ** 2).sum() / (x_hat * x).sum(),
        "dead_fraction": (density == 0).mean(), "dense_fraction": (density > 0.3).mean(),
        "num_rows": 200,
    }
    # Float32 model outputs change in the last bits with the batch size.
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-6), key
    assert 0 < result["l0"] < 16 and 0 < result["fvu"]
    np.testing.assert_array_equal(result["feature_density"], density)
    # The analysis module's definitions (its bias metric accumulates in float32).
    assert result["fvu"] == pytest.approx(
        analysis.fraction_of_variance_unexplained(gated_sae, X), rel=1e-6)
    assert result["shrinkage"] == pytest.approx(
        analysis.relative_reconstruction_bias(gated_sae, X), rel=1e-5)
    np.testing.assert_allclose(result["feature_density"], analysis.feature_density(gated_sae, X))
    counts, edges = result["density_histogram"], result["density_bin_edges"]
    assert counts.sum() == 16 and counts[0] == (density == 0).sum()
    np.testing.assert_array_equal(
        counts, np.histogram(np.log10(np.maximum(density, 1e-10)), bins=edges)[0])

    # Dictionary geometry: W_dec rows, W_gate columns.
    decoder = np.asarray(gated_sae.decoder.kernel, "float64")
    encoder = np.asarray(gated_sae.encoder.input_kernel, "float64")
    unit = decoder / np.linalg.norm(decoder, axis=1, keepdims=True)
    gram = np.abs(unit @ unit.T)
    np.fill_diagonal(gram, -1)
    np.testing.assert_allclose(result["max_decoder_cosine"], gram.max(1), atol=1e-12)
    own = [e @ d / np.linalg.norm(e) / np.linalg.norm(d) for e, d in zip(encoder.T, decoder)]
    np.testing.assert_allclose(result["encoder_decoder_cosine"], own, atol=1e-12)
    assert result["max_decoder_cosine_mean"] == pytest.approx(gram.max(1).mean())


def test_core_metrics_of_an_exact_sae(exact_sae):
    result = core_metrics(exact_sae, X, batch_size=48, dense_threshold=0.6)
    assert result["fvu"] == 0 and result["explained_variance"] == 1
    assert result["cosine_similarity"] == pytest.approx(1, abs=1e-12)
    assert result["shrinkage"] == pytest.approx(1, abs=1e-12)
    assert result["l0"] == (X != 0).sum(1).mean()  # one of relu(x_j), relu(-x_j) fires
    np.testing.assert_allclose(result["feature_density"][:8] + result["feature_density"][8:], 1)
    assert result["dead_fraction"] == 0
    assert result["dense_fraction"] == np.mean(result["feature_density"] > 0.6)
    np.testing.assert_array_equal(result["max_decoder_cosine"], 1)  # e_j and -e_j
    np.testing.assert_array_equal(result["encoder_decoder_cosine"], 1)


def test_core_metrics_stream_an_activation_store(exact_sae, tmp_path):
    store = ActivationStore.create(tmp_path / "s", 8, dtype="float32", shard_rows=64)
    store.append(X)
    store.close()
    from_store = core_metrics(exact_sae, ActivationStore.open(tmp_path / "s"), batch_size=50)
    from_array = core_metrics(exact_sae, X, batch_size=50)
    for key in ("l0", "fvu", "cosine_similarity", "shrinkage", "num_rows"):
        assert from_store[key] == pytest.approx(from_array[key], rel=1e-9)


@hypothesis.settings(max_examples=6)
@hypothesis.given(batch_size=st.integers(1, 250))
def test_fvu_and_explained_variance_add_to_one_at_any_batch_size(gated_sae, batch_size):
    result = core_metrics(gated_sae, X[:37], batch_size=batch_size)
    whole = core_metrics(gated_sae, X[:37], batch_size=37)
    assert result["fvu"] + result["explained_variance"] == 1.0
    for key in ("l0", "fvu", "cosine_similarity", "shrinkage"):
        assert result[key] == pytest.approx(whole[key], rel=1e-6)


@hypothesis.given(hnp.arrays("float64", st.integers(1, 60),
                             elements=st.floats(0, 1, allow_subnormal=False)))
def test_density_histogram_counts_every_latent_once(density):
    counts, edges = density_histogram(density)
    assert counts.sum() == len(density) and len(edges) == len(counts) + 1
    assert counts[0] >= (density == 0).sum() and counts[-1] >= (density == 1).sum()


@hypothesis.given(hnp.arrays("float64", st.tuples(st.integers(2, 12), st.integers(1, 5)),
                             elements=st.floats(-4, 4)),
                  st.integers(1, 5))
def test_max_decoder_cosine_blocks_match_the_whole_matrix(kernel, block_rows):
    result = max_decoder_cosine(kernel, block_rows=block_rows)
    norms = np.maximum(np.linalg.norm(kernel, axis=1, keepdims=True), 1e-8)
    gram = np.abs((kernel / norms) @ (kernel / norms).T)
    np.fill_diagonal(gram, -1)
    np.testing.assert_allclose(result, np.clip(gram.max(1), 0, 1), atol=1e-12)
    assert ((0 <= result) & (result <= 1)).all()


def test_geometry_edge_cases():
    assert np.isnan(max_decoder_cosine(np.ones((1, 3)))).all()
    np.testing.assert_array_equal(max_decoder_cosine(np.array([[0.0, 0.0], [1.0, 0.0]])), 0)
    with pytest.raises(ValueError, match="Received: encoder_kernel.shape"):
        encoder_decoder_cosine(np.ones((3, 4)), np.ones((3, 4)))


def test_core_metrics_reject_bad_inputs(gated_sae, tmp_path):
    for bad, match in [(X[:, :5], r"8 features.*Received: x.shape=\(200, 5\)"),
                       (X[0], r"2-D.*Received: x.shape=\(8,\)"),
                       (X[:0], r"empty.*Received: x.shape=\(0, 8\)"),
                       (np.where(np.eye(200, 8) > 0, np.nan, X), "NaN or Inf")]:
        with pytest.raises(ValueError, match=match):
            core_metrics(gated_sae, bad)
    with pytest.raises(ValueError, match="Received: dense_threshold=1.5"):
        core_metrics(gated_sae, X, dense_threshold=1.5)
    store = ActivationStore.create(tmp_path / "s", 5, dtype="float32")
    store.append(X[:, :5])
    store.close()
    with pytest.raises(ValueError, match="Received: a store of 200 rows of width 5"):
        core_metrics(gated_sae, ActivationStore.open(tmp_path / "s"))


# ------------------------------------------------------------------ probing
def test_k_sparse_probe_on_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    keep = digits.target < 4  # four one-vs-rest tasks: enough, and quick
    x, labels = (digits.data[keep] / 16.0).astype("float32"), digits.target[keep]
    keras.utils.set_random_seed(0)
    sae = gsl.build_sae("topk", 64, 96, k=12)  # untrained: random features
    result = k_sparse_probe(sae, x, labels, ks=(1, 4), seed=1)
    accuracies = result["probe_task_accuracies"]
    assert accuracies.shape == (4, 3) and ((0 <= accuracies) & (accuracies <= 1)).all()
    np.testing.assert_array_equal(result["probe_classes"], np.arange(4))
    assert result["probe_balanced_accuracy_raw"] > 0.9  # chance: 0.5 for every task
    assert result["probe_balanced_accuracy_k4"] > 0.5
    # The ranking, by brute force on the same train split.
    train, _ = stratified_split(labels, 0.2, 1)
    latents = sae.encode(x)[train].astype("float64")
    for task in range(4):
        inside = labels[train] == task
        score = np.abs(latents[inside].mean(0) - latents[~inside].mean(0))
        np.testing.assert_array_equal(result["probe_top_latents"][task],
                                      np.argsort(-score, kind="stable")[:4])


def test_k_sparse_probe_finds_a_planted_latent(exact_sae):
    labels = np.repeat(["no", "yes"], 100)
    x = X.copy()
    x[:, 3] = np.where(labels == "yes", 1.0, -1.0)  # latents 3 = relu(x_3), 11 = relu(-x_3)
    result = k_sparse_probe(exact_sae, x, labels, ks=(1, 16), test_fraction=0.25)
    assert result["probe_classes"].tolist() == ["yes"]  # two classes: one task
    assert result["probe_top_latents"][0, :2].tolist() == [3, 11]  # a tie: lower first
    assert result["probe_balanced_accuracy_k1"] == 1.0
    assert result["probe_balanced_accuracy_raw"] == 1.0


def test_stratified_split_keeps_classes_and_groups():
    labels = np.repeat([0, 1, 2], [40, 80, 80])
    train, test = stratified_split(labels, 0.25, seed=3)
    assert len(test) == 50 and np.bincount(labels[test]).tolist() == [10, 20, 20]
    assert sorted(np.concatenate([train, test])) == list(range(200))
    groups = np.arange(200) // 5
    train, test = stratified_split(labels, 0.25, seed=3, groups=groups)
    assert not set(groups[train]) & set(groups[test])
    assert set(labels[test]) == {0, 1, 2} and 30 <= len(test) <= 70


def test_probe_errors(exact_sae, monkeypatch):
    labels = np.arange(200) % 2
    with pytest.raises(ValueError, match=r"one entry per row.*Received: labels.shape=\(5,\)"):
        k_sparse_probe(exact_sae, X, labels[:5], ks=(1,))
    with pytest.raises(ValueError, match="at least 2 classes"):
        k_sparse_probe(exact_sae, X, np.zeros(200), ks=(1,))
    with pytest.raises(ValueError, match="Received: ks=17"):
        k_sparse_probe(exact_sae, X, labels, ks=(1, 17))
    with pytest.raises(ValueError, match="Received: test_fraction=1.5"):
        stratified_split(labels, 1.5)
    monkeypatch.setitem(__import__("sys").modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"pip install \"gated-sae-layers\[data\]\""):
        k_sparse_probe(exact_sae, X, labels)


# ------------------------------------------------------------------ splicing
def test_spliced_metrics_match_a_hand_computation(host, exact_sae, gated_sae):
    model, probabilities = host
    hidden = np.asarray(model.get_layer("hidden")(INPUTS))
    head = model.get_layer("logits")
    mean = np.broadcast_to(hidden.mean(0), hidden.shape)
    logits = {"clean": head(hidden), "zero_ablation": head(np.zeros_like(hidden)),
              "mean_ablation": head(mean),
              "spliced": head(gated_sae.predict_on_batch(hidden)["reconstruction"])}
    loss = {k: float(np.mean(_cross_entropy(v, None, TARGETS))) for k, v in logits.items()}

    result = spliced_metrics(model, "hidden", gated_sae, INPUTS, _cross_entropy,
                             targets=TARGETS, batch_size=25)
    for name in logits:
        assert result[f"loss_{name}"] == pytest.approx(loss[name], rel=1e-5)
        if name != "clean":
            kl = _kl(logits["clean"], logits[name])
            assert result["kl_divergence" + ("" if name == "spliced" else f"_{name}")] == \
                pytest.approx(kl, rel=1e-4, abs=1e-7)
    for ablation in ("zero_ablation", "mean_ablation"):
        assert result[f"loss_recovered_{ablation}"] == pytest.approx(
            (loss[ablation] - loss["spliced"]) / (loss[ablation] - loss["clean"]), rel=1e-4)

    # An SAE that reconstructs exactly costs nothing; the KL of probabilities
    # equals that of the logits they come from.
    def absolute_error(out, clean, y):
        return np.abs(np.asarray(out) - np.asarray(clean)).sum(-1)

    exact = spliced_metrics(probabilities, "hidden", exact_sae, INPUTS, absolute_error,
                            batch_size=25, outputs="probabilities")
    assert exact["loss_spliced"] == exact["loss_clean"] == 0
    assert exact["loss_recovered_zero_ablation"] == exact["loss_recovered_mean_ablation"] == 1
    assert exact["kl_divergence"] == pytest.approx(0, abs=1e-7)
    assert exact["kl_divergence_zero_ablation"] == pytest.approx(
        result["kl_divergence_zero_ablation"], rel=1e-4)


def test_spliced_metrics_errors(host, exact_sae, gated_sae):
    model = host[0]
    run = lambda **kw: spliced_metrics(  # noqa: E731
        **{"model": model, "layer": "hidden", "sae": exact_sae, "inputs": INPUTS,
           "loss_fn": _cross_entropy, "targets": TARGETS, **kw})
    with pytest.raises(ValueError, match="Received: outputs='logs'"):
        run(outputs="logs")
    with pytest.raises(ValueError, match="empty"):
        run(inputs=INPUTS[:0], targets=None)
    with pytest.raises(ValueError, match="Received: 5 targets"):
        run(targets=TARGETS[:5])
    with pytest.raises(ValueError, match=r"one loss per example.*Received: 1 values"):
        run(loss_fn=lambda out, clean, y: np.float32(0.0))
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        run(layer="nope")
    with pytest.raises(ValueError, match="outputs width 3"):
        run(layer="logits")


@hypothesis.given(hnp.arrays("float64", st.tuples(st.integers(1, 4), st.integers(2, 5)),
                             elements=st.floats(-20, 20)),
                  st.integers(0, 2**31 - 1))
def test_kl_divergence_is_non_negative_and_zero_on_itself(clean, seed):
    other = clean + np.random.default_rng(seed).normal(size=clean.shape)
    assert (kl_divergence(clean, other) >= -1e-12).all()
    np.testing.assert_allclose(kl_divergence(clean, clean), 0, atol=1e-12)
    probabilities = np.exp(_log_softmax(clean))
    np.testing.assert_allclose(
        kl_divergence(probabilities, np.exp(_log_softmax(other)), "probabilities"),
        kl_divergence(clean, other), rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ callback and report
def test_callback_fires_every_n_steps_during_fit(host, tmp_path):
    model = host[0]
    activations = np.asarray(keras.Model(model.input, model.get_layer("hidden").output)(
        RNG.normal(size=(200, 6)).astype("float32")))
    sae = gsl.build_sae("topk", 8, 16, k=3)
    sae.compile(optimizer="adam")
    evaluation = SplicedEvaluation(7, model=model, layer="hidden", inputs=INPUTS,
                                   targets=TARGETS, loss_fn=_cross_entropy,
                                   batch_size=30, log_dir=tmp_path / "logs")
    # Keras's loop (on JAX, the kit's fast loop would evaluate once per dispatch).
    sae.fit(activations, batch_size=20, epochs=2, verbose=0, callbacks=[evaluation],
            device_resident=False)
    assert evaluation.step == 20
    assert [step for step, _ in evaluation.history] == [7, 14]
    last = evaluation.history[-1][1]
    assert np.isfinite(list(last.values())).all()
    events = _events(tmp_path / "logs")
    assert sorted(events["spliced/loss_recovered_zero_ablation"]) == [7, 14]
    assert float(events["spliced/kl_divergence"][14]) == pytest.approx(
        last["kl_divergence"], rel=1e-6)
    assert evaluation.evaluate() == spliced_metrics(  # it evaluates the SAE in training
        model, "hidden", sae, INPUTS, _cross_entropy, targets=TARGETS, batch_size=30)
    assert evaluation.history[-1][0] == 20
    with pytest.raises(ValueError, match="Received: every_n_steps=0"):
        SplicedEvaluation(0, model=model, layer="hidden", inputs=INPUTS,
                          loss_fn=_cross_entropy)


def test_evaluate_sae_runs_everything_and_logs(host, exact_sae, tmp_path):
    labels = (X[:, 0] > 0).astype("int64")
    result = evaluate_sae(exact_sae, X, labels=labels, log_dir=tmp_path, step=3, splice=dict(
        model=host[0], layer="hidden", inputs=INPUTS, targets=TARGETS,
        loss_fn=_cross_entropy))
    assert result["fvu"] == 0 and result["loss_recovered_zero_ablation"] == 1
    assert result["probe_top_latents"][0, 0] in (0, 8)  # relu(x_0) or relu(-x_0)
    assert result["probe_balanced_accuracy_k1"] > 0.9
    assert "kl_divergence" in result and "probe_balanced_accuracy_k5" in result
    assert "probe_balanced_accuracy_k20" not in result  # k > latent_dim: left out
    events = _events(tmp_path)
    assert float(events["sae_eval/l0"][3]) == pytest.approx(result["l0"])
    histogram = events["sae_eval/log10_feature_density"][3]
    np.testing.assert_array_equal(histogram[:, 2], result["density_histogram"])
    np.testing.assert_array_equal(histogram[:, 0], result["density_bin_edges"][:-1])
    assert "sae_eval/max_decoder_cosine" in events
    with pytest.raises(ValueError, match=r"missing \['loss_fn'\], unknown \['sae'\]"):
        evaluate_sae(exact_sae, X, splice=dict(model=host[0], layer="hidden",
                                               inputs=INPUTS, sae=exact_sae))


# ------------------------------------------------------------------ command line
def test_evaluate_command_end_to_end(exact_sae, tmp_path, capsys):
    store = ActivationStore.create(tmp_path / "store", 8, dtype="float32", shard_rows=64)
    store.append(X)
    store.close()
    exact_sae.save(tmp_path / "sae.keras")
    np.save(tmp_path / "labels.npy", (X[:, 2] > 0).astype("int64"))
    top = argparse.ArgumentParser(prog="gated-sae")
    add_evaluate_command(top.add_subparsers(dest="command", required=True))

    def run(*argv):
        args = top.parse_args(["evaluate", str(tmp_path / "sae.keras"),
                               "--store", str(tmp_path / "store"), *argv])
        return args.run(args)

    printed = run("--labels", str(tmp_path / "labels.npy"), "--json",
                  str(tmp_path / "out.json"), "--log-dir", str(tmp_path / "logs"),
                  "--batch-size", "64")
    assert json.loads(capsys.readouterr().out) == printed
    assert printed["fvu"] == 0 and printed["num_rows"] == 200
    assert printed["probe_balanced_accuracy_k1"] > 0.9
    assert sum(printed["density_histogram"]) == 16 and "feature_density" not in printed
    full = json.loads((tmp_path / "out.json").read_text())
    assert len(full["feature_density"]) == 16 and full["probe_top_latents"][0][0] in (2, 10)
    assert "sae_eval/fvu" in _events(tmp_path / "logs")

    np.save(tmp_path / "labels.npy", np.zeros(7, "int64"))
    with pytest.raises(ValueError, match=r"one label per store row \(200\)"):
        run("--labels", str(tmp_path / "labels.npy"))
    with pytest.raises(FileNotFoundError, match="no activation store"):
        run_evaluate(top.parse_args(["evaluate", str(tmp_path / "sae.keras"),
                                     "--store", str(tmp_path)]))
