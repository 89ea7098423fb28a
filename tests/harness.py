"""A shared layer test harness (keras.testing is not public).

`run_layer_test` checks what every layer of the kit promises: the config
round-trips to an equal layer, JSON included; the layer builds; a symbolic
call on `keras.KerasTensor` gives the shapes of the eager call; the eager
call on real numbers matches a rebuilt copy with the same weights; and a
one-step `fit` runs and changes the weights.
"""

import json

import keras
import numpy as np


def _shapes(structure):
    return keras.tree.map_structure(lambda t: tuple(t.shape), structure)


def run_layer_test(layer_cls, init_kwargs, input_data, call_kwargs=None,
                   expected_output_shape=None, expect_weight_updates=True):
    call_kwargs = call_kwargs or {}
    layer = layer_cls(**init_kwargs)

    # Config and JSON round trip.
    config = layer.get_config()
    revived = layer_cls.from_config(json.loads(json.dumps(config)))
    assert revived.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert keras.saving.deserialize_keras_object(serialized).get_config() == config

    # Symbolic call.
    symbolic_input = keras.KerasTensor(input_data.shape, dtype="float32")
    symbolic_output = layer_cls(**init_kwargs)(symbolic_input, **call_kwargs)
    # Eager call, and the same weights in a layer built from the config.
    output = layer(input_data, **call_kwargs)
    assert _shapes(symbolic_output) == _shapes(output)
    if expected_output_shape is not None:
        assert _shapes(output) == expected_output_shape
    revived(input_data, **call_kwargs)
    revived.set_weights(layer.get_weights())
    keras.tree.map_structure(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                rtol=1e-6, atol=1e-6),
        output, revived(input_data, **call_kwargs))

    # One training step inside a Functional model moves the weights.
    inputs = keras.Input(input_data.shape[1:])
    outputs = keras.tree.flatten(layer(inputs, **call_kwargs))
    model = keras.Model(inputs, keras.layers.Add()(
        [keras.layers.Dense(1)(o) for o in outputs]) if len(outputs) > 1
        else keras.layers.Dense(1)(outputs[0]))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.array(w) for w in layer.get_weights()]
    model.fit(input_data, np.ones((input_data.shape[0], 1), "float32"),
              epochs=1, batch_size=len(input_data), verbose=0)
    after = layer.get_weights()
    moved = any(not np.allclose(b, a) for b, a in zip(before, after))
    assert moved == expect_weight_updates
    return layer
