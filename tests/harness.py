"""A shared layer test harness (keras.testing is not public).

`run_layer_test` checks what every layer of the kit promises: the config
round-trips to an equal layer, JSON included; the layer builds, with the
number of trainable and non-trainable weights the test expects (a weight
added or dropped by a refactor changes checkpoints and optimizer state, so it
must be deliberate, as in keras-hub's `run_layer_test`); a symbolic
call on `keras.KerasTensor` gives the shapes and dtypes of the eager call;
the eager call on real numbers matches a rebuilt copy with the same weights;
and a one-step `fit` runs, stays finite and changes the weights.

With `dtype_policy="mixed_bfloat16"` the whole test runs under that global
policy and also checks the mixed-precision contract: every float variable
of the layer and of the optimizer is float32, and every output has the
policy's compute dtype (bfloat16).

Also the tests' one table of every SAE architecture (`ARCHITECTURES`) and
their factory of small models (`build_model`).
"""

import contextlib
import json

import keras
import numpy as np
from keras import ops

import gated_sae_layers as gsl

# The policies every layer's harness test runs under.
DTYPE_POLICIES = ("float32", "mixed_bfloat16")


@contextlib.contextmanager
def dtype_policy_scope(policy):
    """Sets the global dtype policy inside the block (`None`: leave it as is)."""
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _shapes(structure):
    return keras.tree.map_structure(lambda t: tuple(t.shape), structure)


def _dtypes(structure):
    return keras.tree.map_structure(
        lambda t: keras.backend.standardize_dtype(t.dtype), structure)


def _numpy32(tensor):
    return np.asarray(ops.convert_to_numpy(ops.cast(tensor, "float32")))


def _is_float(variable):
    return keras.backend.is_float_dtype(variable.dtype)


def run_layer_test(layer_cls, init_kwargs, input_data, call_kwargs=None,
                   expected_output_shape=None, expect_weight_updates=True,
                   dtype_policy=None, *, expected_num_trainable_weights,
                   expected_num_non_trainable_weights):
    """Runs the harness; `input_data` is an array or a list of arrays.

    `expected_num_trainable_weights` and `expected_num_non_trainable_weights`
    (required) are the counts of `layer.trainable_weights` and
    `layer.non_trainable_weights` once built, symbolically or eagerly.
    `dtype_policy` (e.g. `"mixed_bfloat16"`) sets the global dtype policy
    for the test; `None` keeps the current one.
    """
    expected_counts = (expected_num_trainable_weights, expected_num_non_trainable_weights)
    with dtype_policy_scope(dtype_policy):
        return _run_layer_test(layer_cls, init_kwargs, input_data, call_kwargs or {},
                               expected_output_shape, expect_weight_updates,
                               expected_counts)


def _check_weight_counts(layer, expected_counts):
    counts = (len(layer.trainable_weights), len(layer.non_trainable_weights))
    assert counts == expected_counts, (
        f"{type(layer).__name__} has {counts[0]} trainable and {counts[1]} "
        f"non-trainable weights; expected {expected_counts[0]} and {expected_counts[1]}: "
        f"{[v.path for v in layer.weights]}")


def _run_layer_test(layer_cls, init_kwargs, input_data, call_kwargs,
                    expected_output_shape, expect_weight_updates, expected_counts):
    policy = keras.config.dtype_policy()
    layer = layer_cls(**init_kwargs)
    assert layer.compute_dtype == policy.compute_dtype
    first_input = keras.tree.flatten(input_data)[0]

    # Config and JSON round trip.
    config = layer.get_config()
    revived = layer_cls.from_config(json.loads(json.dumps(config)))
    assert revived.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert keras.saving.deserialize_keras_object(serialized).get_config() == config

    # Symbolic call.
    symbolic_input = keras.tree.map_structure(
        lambda x: keras.KerasTensor(x.shape, dtype="float32"), input_data)
    symbolic_layer = layer_cls(**init_kwargs)
    symbolic_output = symbolic_layer(symbolic_input, **call_kwargs)
    _check_weight_counts(symbolic_layer, expected_counts)
    # Eager call, and the same weights in a layer built from the config.
    output = layer(input_data, **call_kwargs)
    _check_weight_counts(layer, expected_counts)
    assert _shapes(symbolic_output) == _shapes(output)
    assert _dtypes(symbolic_output) == _dtypes(output)
    assert set(keras.tree.flatten(_dtypes(output))) == {policy.compute_dtype}
    if expected_output_shape is not None:
        assert _shapes(output) == expected_output_shape
    revived(input_data, **call_kwargs)
    revived.set_weights(layer.get_weights())
    keras.tree.map_structure(
        lambda a, b: np.testing.assert_allclose(_numpy32(a), _numpy32(b),
                                                rtol=1e-6, atol=1e-6),
        output, revived(input_data, **call_kwargs))

    # One training step inside a Functional model moves the weights.
    inputs = keras.tree.map_structure(lambda x: keras.Input(x.shape[1:]), input_data)
    outputs = keras.tree.flatten(layer(inputs, **call_kwargs))
    model = keras.Model(inputs, keras.layers.Add()(
        [keras.layers.Dense(1)(o) for o in outputs]) if len(outputs) > 1
        else keras.layers.Dense(1)(outputs[0]))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5), loss="mse")
    before = [np.array(w) for w in layer.get_weights()]
    history = model.fit(input_data, np.ones((first_input.shape[0], 1), "float32"),
                        epochs=1, batch_size=len(first_input), verbose=0)
    after = layer.get_weights()
    moved = any(not np.allclose(b, a) for b, a in zip(before, after))
    assert moved == expect_weight_updates
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(w).all() for w in after)

    # Variables keep the policy's variable dtype (float32 under mixed
    # precision); integer counters stay integers.
    for variable in layer.variables + model.optimizer.variables:
        if _is_float(variable):
            assert variable.dtype == policy.variable_dtype, variable.path
    return layer


# ------------------------------------------------------- every architecture
# Every architecture `gsl.build_sae` knows (`test_builders.py` checks the
# table against its registry); the last three choose their latents by k.
K_ARCHITECTURES = ("topk", "batch_topk", "matryoshka")
ARCHITECTURES = ("gated", "relu", "jumprelu") + K_ARCHITECTURES


def architecture_kwargs(architecture, latent_dim, **overrides):
    """Small arguments under which every part of `architecture` runs within a
    few steps: a sparsity term, or k = 3 with a live AuxK term (latents are
    dead after 2 steps) and, for Matryoshka, prefixes of 1/6 and 1/2 of the
    latents; `overrides` replace or add arguments."""
    if architecture in K_ARCHITECTURES:
        kwargs = {"k": 3, "k_aux": 6, "dead_steps_threshold": 2}
        if architecture == "matryoshka":
            kwargs["prefix_sizes"] = [latent_dim // 6, latent_dim // 2]
    elif architecture == "jumprelu":
        kwargs = {"sparsity_coefficient": 1e-2, "initial_threshold": 0.05,
                  "bandwidth": 0.5}
    elif architecture in ARCHITECTURES:
        kwargs = {"sparsity_coefficient": 3e-2}
    else:
        raise ValueError(f"no architecture {architecture!r} in tests/harness.py")
    return {**kwargs, **overrides}


def build_model(architecture, input_dim, latent_dim, **overrides):
    """`gsl.build_sae(architecture, ...)` with `architecture_kwargs`."""
    return gsl.build_sae(architecture, input_dim, latent_dim,
                         **architecture_kwargs(architecture, latent_dim, **overrides))


def with_edited_config(source, target, edit):
    """Copies the `.keras` file `source` to `target` with its `config.json`
    passed through `edit(config)` (which changes the dict in place): a file
    as an older version of the kit wrote it."""
    import zipfile

    with zipfile.ZipFile(source) as new, zipfile.ZipFile(target, "w") as old:
        for item in new.infolist():
            data = new.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config)
            old.writestr(item, data)
