import keras
import numpy as np
import pytest
import tensorflow as tf

from gated_sae_layers.activations import ActivationStore
from gated_sae_layers.activations.harvest import harvest


def _functional():
    x = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(x)
    return keras.Model(x, keras.layers.Dense(2, name="logits")(hidden))


def _assert_same_rows(actual, expected):
    """Equal up to 1-ulp matmul rounding: oneDNN's result for a row can depend
    on the batch it is computed in (seen as 1.2e-7 on this CPU)."""
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)


def _data(n=37):
    return np.random.default_rng(0).normal(size=(n, 6)).astype("float32")


def test_functional_harvest_is_exactly_the_layer_output():
    model, x = _functional(), _data()
    expected = keras.Model(model.inputs, model.get_layer("hidden").output).predict(x, verbose=0)
    _assert_same_rows(harvest(model, "hidden", x, batch_size=8, progress=False),
                      expected)
    got = harvest(model, model.get_layer("hidden"),
                  tf.data.Dataset.from_tensor_slices((x, x)).batch(10), progress=False)
    _assert_same_rows(got, expected)


def test_sequential_and_subclassed_models():
    sequential = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="a"),
                                   keras.layers.Dense(3, name="b")])

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.first = keras.layers.Dense(4, name="first")
            self.second = keras.layers.Dense(3)

        def call(self, x):
            return self.second(keras.ops.tanh(self.first(x)))

    subclassed = Subclassed()
    x = _data(9)
    subclassed(x)
    got = harvest(sequential, "a", x, progress=False)
    np.testing.assert_allclose(got, x @ np.asarray(sequential.get_layer("a").kernel)
                               + np.asarray(sequential.get_layer("a").bias), rtol=1e-5, atol=1e-6)
    got = harvest(subclassed, "first", x, progress=False)
    np.testing.assert_allclose(got, np.asarray(subclassed.first(x)), rtol=1e-6)
    # The capture is undone: the model runs as before.
    np.testing.assert_allclose(subclassed(x), subclassed.second(np.tanh(subclassed.first(x))),
                               rtol=1e-5)


def _token_model():
    token_ids = keras.Input((5,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((5,), dtype="int32", name="padding_mask")
    embedded = keras.layers.Embedding(20, 4, name="embedding")(token_ids)
    return keras.Model({"token_ids": token_ids, "padding_mask": padding_mask},
                       keras.layers.Dense(3, name="dense")(embedded))


def test_tokens_are_flattened_and_padding_and_special_tokens_dropped():
    model = _token_model()
    inputs = {"token_ids": np.array([[1, 7, 8, 2, 0], [1, 9, 2, 0, 0]], "int32"),
              "padding_mask": np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], "int32")}
    full = keras.Model(model.inputs, model.get_layer("dense").output)(inputs)
    full = np.asarray(full)
    rows = harvest(model, "dense", inputs, progress=False)
    np.testing.assert_array_equal(rows, np.concatenate([full[0, :4], full[1, :3]]))
    rows = harvest(model, "dense", inputs, drop_token_ids=(1, 2), progress=False)
    np.testing.assert_array_equal(rows, np.concatenate([full[0, 1:3], full[1, 1:2]]))


class _Killed(Exception):
    pass


def test_a_killed_harvest_resumes_without_loss_or_duplication(tmp_path):
    model, x = _functional(), _data(50)
    clean = harvest(model, "hidden", x, batch_size=7, progress=False)

    def dying_batches():
        for start in range(0, 50, 7):
            if start >= 28:
                raise _Killed()
            yield x[start:start + 7]

    store = ActivationStore.create(tmp_path, 5, dtype="float32", shard_rows=6)
    dataset = tf.data.Dataset.from_generator(
        dying_batches, output_signature=tf.TensorSpec((None, 6), tf.float32))
    with pytest.raises(Exception):
        harvest(model, "hidden", dataset, store=store, progress=False)
    assert 0 < ActivationStore.open(tmp_path).num_rows < 50
    resumed = ActivationStore.create(tmp_path, 5, dtype="float32", shard_rows=6, resume=True)
    harvest(model, "hidden", x, batch_size=11, store=resumed, progress=False)
    _assert_same_rows(ActivationStore.open(tmp_path).read_all(), clean)


def test_harvest_errors():
    model = _functional()
    with pytest.raises(ValueError, match="no layer named 'hiden'.*hidden"):
        harvest(model, "hiden", _data(), progress=False)
    with pytest.raises(TypeError, match="layer"):
        harvest(model, 3, _data(), progress=False)
    with pytest.raises(ValueError, match="empty"):
        harvest(model, "hidden", _data(0), progress=False)


def test_a_resume_with_other_inputs_is_refused(tmp_path):
    """The store records a fingerprint of its inputs (their number, and the
    sha256 of the first example) and refuses a resume from other inputs."""
    model, x = _functional(), _data(50)
    clean = harvest(model, "hidden", x, progress=False)
    store = ActivationStore.create(tmp_path, 5, dtype="float32", shard_rows=6)
    original_append, calls = store.append, []

    def dying_append(rows, source_index=None):
        calls.append(source_index)
        if len(calls) > 20:
            raise _Killed()
        original_append(rows, source_index=source_index)

    store.append = dying_append
    with pytest.raises(_Killed):
        harvest(model, "hidden", x, batch_size=8, store=store, progress=False)
    fingerprint = ActivationStore.open(tmp_path).metadata["inputs_fingerprint"]
    assert fingerprint["num_examples"] == 50 and len(fingerprint["first_example_sha256"]) == 64

    def resume(inputs):
        store = ActivationStore.create(tmp_path, 5, dtype="float32", shard_rows=6, resume=True)
        return harvest(model, "hidden", inputs, batch_size=16, store=store, progress=False)

    with pytest.raises(ValueError, match=r"other inputs.*\['first_example_sha256'\]"):
        resume(x[::-1].copy())
    with pytest.raises(ValueError, match=r"other inputs.*\['num_examples'\]"):
        resume(x[:49])
    with pytest.raises(ValueError, match="first_example_sha256"):
        resume(x.astype("float64"))  # the dtype is part of the fingerprint
    # A dataset (of unknown length) of the same examples resumes.
    resume(tf.data.Dataset.from_tensor_slices(x).batch(7))
    _assert_same_rows(ActivationStore.open(tmp_path).read_all(), clean)
