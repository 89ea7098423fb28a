"""`fit` refuses bad loop arguments up front, in one check shared by every loop.

Issue 20 (item 6): the JAX device-resident loop took what Keras's stock loop
refuses, and the stock loop refused some values only in a backend's words
(or took them). `models/_fit/arguments.check_fit_arguments` now checks
`validation_split`, `batch_size`, `validation_batch_size`, `epochs`,
`initial_epoch` and the compiled `steps_per_execution` before `fit` picks
its loop, with Keras's own text where Keras has one. This module runs on the
default backend (the stock loop here); `tests/test_device_resident_fit.py`
runs the same cases on JAX through both loops.
"""

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl

INPUT_DIM, LATENT_DIM, ROWS = 8, 16, 64


def keras_split_message(split, rows=ROWS):
    """Keras's text (`keras/src/trainers/data_adapters/array_slicing.py`,
    `train_validation_split`) for a split that leaves no row on one side."""
    return (f"Training data contains {rows} samples, which is not sufficient to split "
            "it into a validation and training set as specified by "
            f"`validation_split={split}`. Either provide more data, or a different "
            "value for the `validation_split` argument.")


# `(fit arguments, compile arguments, error type, the message, matched literally)`.
BAD_FIT_ARGUMENTS = [
    ({"validation_split": 1.0}, {}, ValueError, keras_split_message(1.0)),
    ({"validation_split": 0.999}, {}, ValueError, keras_split_message(0.999)),
    ({"validation_split": -0.1}, {}, ValueError,
     "`validation_split` must be a number from 0 to 1 (the fraction of the rows held "
     "out for validation). Received: validation_split=-0.1"),
    ({"validation_split": 1.5}, {}, ValueError, "Received: validation_split=1.5"),
    ({"validation_split": float("nan")}, {}, ValueError, "Received: validation_split=nan"),
    ({"validation_split": "0.2"}, {}, TypeError,
     "`validation_split` must be a number from 0 to 1 (the fraction of the rows held "
     "out for validation). Received: validation_split='0.2' of type str"),
    ({"batch_size": 2.5}, {}, TypeError,
     "`batch_size` must be a positive integer or None. Received: batch_size=2.5 of "
     "type float"),
    ({"batch_size": 0}, {}, ValueError,
     "`batch_size` must be a positive integer or None. Received: batch_size=0"),
    ({"batch_size": -3}, {}, ValueError, "Received: batch_size=-3"),
    ({"batch_size": True}, {}, TypeError, "Received: batch_size=True of type bool"),
    ({"validation_batch_size": 0.5}, {}, TypeError, "Received: validation_batch_size=0.5"),
    ({"epochs": 2.5}, {}, TypeError,
     "`epochs` must be an integer >= 0. Received: epochs=2.5 of type float"),
    ({"epochs": -1}, {}, ValueError, "Received: epochs=-1"),
    ({"initial_epoch": -2}, {}, ValueError, "Received: initial_epoch=-2"),
    ({}, {"steps_per_execution": 0}, ValueError,
     "`steps_per_execution` (of `compile`) must be a positive integer. Received: "
     "steps_per_execution=0"),
    ({}, {"steps_per_execution": -1}, ValueError, "Received: steps_per_execution=-1"),
    ({}, {"steps_per_execution": 2.5}, TypeError,
     "Received: steps_per_execution=2.5 of type float"),
]
CASE_IDS = [f"{'-'.join(f'{k}={v!r}' for k, v in {**fit, **comp}.items())}"
            for fit, comp, _, _ in BAD_FIT_ARGUMENTS]


def data(rows=ROWS):
    return np.random.default_rng(0).normal(size=(rows, INPUT_DIM)).astype("float32")


def compiled_model(compile_kwargs=None):
    keras.utils.set_random_seed(1)
    model = gsl.build_sae("gated", INPUT_DIM, LATENT_DIM, sparsity_coefficient=1e-2)
    if compile_kwargs and "steps_per_execution" in compile_kwargs:
        # `SparseAutoencoder.compile` may refuse it itself; `fit` must also
        # refuse a model whose attribute was set otherwise.
        model.compile(keras.optimizers.Adam(1e-3))
        model.steps_per_execution = compile_kwargs["steps_per_execution"]
    else:
        model.compile(keras.optimizers.Adam(1e-3), **(compile_kwargs or {}))
    return model


def assert_refused_before_training(model, fit_kwargs, error, message, **options):
    """`fit` raises `error` with exactly `message` in it, before any step."""
    before = [np.array(v) for v in model.trainable_weights]
    with pytest.raises(error) as caught:
        model.fit(data(), verbose=0, **fit_kwargs, **options)
    assert message in str(caught.value)
    assert int(model.optimizer.iterations) == 0
    for old, variable in zip(before, model.trainable_weights):
        np.testing.assert_array_equal(old, np.array(variable))


@pytest.mark.parametrize("fit_kwargs, compile_kwargs, error, message", BAD_FIT_ARGUMENTS,
                         ids=CASE_IDS)
def test_fit_refuses_bad_loop_arguments_before_any_step(
        fit_kwargs, compile_kwargs, error, message):
    model = compiled_model(compile_kwargs)
    assert_refused_before_training(model, fit_kwargs, error, message)


def test_fit_still_takes_every_good_value():
    """Integers of any kind, `None` batch sizes, a split that leaves rows on
    both sides, and a split beside `validation_data` (which overrides it)."""
    model = compiled_model()
    history = model.fit(data(), batch_size=np.int64(16), validation_split=np.float32(0.25),
                        validation_batch_size=None, epochs=np.int32(2), verbose=0)
    assert len(history.history["val_loss"]) == 2
    model.fit(data(), batch_size=None, validation_split=1.0,
              validation_data=(data(8),), verbose=0)
    model.fit(data(), validation_split=0, epochs=0, verbose=0)


@pytest.mark.parametrize("value, error", [(0, ValueError), (-1, ValueError),
                                          (2.5, TypeError)])
def test_compile_refuses_bad_steps_per_execution(value, error):
    model = gsl.build_sae("gated", INPUT_DIM, LATENT_DIM, sparsity_coefficient=1e-2)
    with pytest.raises(error, match="steps_per_execution"):
        model.compile("adam", steps_per_execution=value)


# ------------------------------------------------------------ DecoderNormalizer
@pytest.mark.parametrize("epsilon, error, match", [
    (-1, ValueError, r"`epsilon` must be a finite number > 0 .*Received: epsilon=-1"),
    (0.0, ValueError, "Received: epsilon=0.0"),
    (float("nan"), ValueError, "Received: epsilon=nan"),
    (float("inf"), ValueError, "Received: epsilon=inf"),
    (1e-60, ValueError, "Received: epsilon=1e-60"),  # 0 in float32: 0 / 0 for a zero row
    ("x", TypeError, "Received: epsilon='x' of type str"),
    (True, TypeError, "Received: epsilon=True of type bool"),
    (None, TypeError, "Received: epsilon=None"),
])
def test_decoder_normalizer_refuses_a_bad_epsilon(epsilon, error, match):
    with pytest.raises(error, match=match):
        gsl.DecoderNormalizer(epsilon=epsilon)


@pytest.mark.parametrize("frequency, error", [("step", ValueError), (["batch"], TypeError),
                                              (None, TypeError), (1, TypeError)])
def test_decoder_normalizer_refuses_a_bad_frequency(frequency, error):
    with pytest.raises(error, match=r"`frequency` must be 'batch' or 'epoch'\. Received"):
        gsl.DecoderNormalizer(frequency=frequency)


def test_decoder_normalizer_keeps_good_values():
    normalizer = gsl.DecoderNormalizer("epoch", epsilon=np.float32(1e-6))
    assert normalizer.epsilon == pytest.approx(1e-6) and type(normalizer.epsilon) is float
    assert gsl.DecoderNormalizer(epsilon=1).epsilon == 1.0
