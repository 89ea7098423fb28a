"""One `Architecture` record per variant, and everything that reads it.

The builders record their name and arguments on the model (saved with it),
the encoder classes declare the axes of their variables (read by
`latent_layout_map`), interop exports by the record, and
`docs/architecture.md`'s worked example runs as written.
"""

import inspect
import pathlib
import re
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers import distribution
from gated_sae_layers.interop import _architectures
from gated_sae_layers.models.builders import assembly
from tests.harness import ARCHITECTURES, architecture_kwargs, with_edited_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOT_RECORDED = {"input_dim", "latent_dim", "name", "dtype"}
TRANSCODER_ONLY = {"output_dim", "skip"}   # recorded for transcoders only


def _mesh():
    return keras.distribution.DeviceMesh(
        shape=(1, 1), axis_names=("batch", "model"),
        devices=keras.distribution.list_devices()[:1])


def test_the_records_are_the_registry():
    assert list(gsl.ARCHITECTURES) == list(gsl.models.builders.BUILDERS)
    for name, record in gsl.ARCHITECTURES.items():
        assert record.name == name
        assert gsl.get_architecture(name) is record
        assert gsl.models.builders.BUILDERS[name] is record.builder
    with pytest.raises(ValueError, match=r"`architecture` must be one of \['gated'"):
        gsl.get_architecture("vanilla")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_built_model_records_its_builder_and_arguments(architecture):
    record = gsl.ARCHITECTURES[architecture]
    kwargs = architecture_kwargs(architecture, 32)
    model = gsl.build_sae(architecture, 8, 32, **kwargs)
    assert isinstance(model.encoder, record.encoder)
    assert model.architecture["name"] == architecture
    arguments = model.architecture["arguments"]
    parameters = set(inspect.signature(record.builder).parameters) - NOT_RECORDED
    assert set(arguments) == parameters - TRANSCODER_ONLY
    json.dumps(arguments)   # saved with the model
    rebuilt = gsl.build_sae(architecture, 8, 32, **arguments)
    assert rebuilt.architecture == model.architecture
    assert [tuple(w.shape) for w in rebuilt.weights] == [
        tuple(w.shape) for w in model.weights]
    # A transcoder's record holds its target width and skip, and rebuilds it.
    transcoder = gsl.build_transcoder(architecture, 8, 6, 32, skip=True, **kwargs)
    arguments = transcoder.architecture["arguments"]
    assert set(arguments) == parameters
    rebuilt = gsl.build_sae(architecture, 8, 32, **arguments)
    assert rebuilt.architecture == transcoder.architecture and rebuilt.is_transcoder
    assert [tuple(w.shape) for w in rebuilt.weights] == [
        tuple(w.shape) for w in transcoder.weights]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_encoder_declares_exactly_the_variables_it_creates(architecture):
    model = gsl.build_sae(architecture, 8, 32, **architecture_kwargs(architecture, 32))
    declared = type(model.encoder).latent_axes
    created = {variable.name: variable for variable in model.encoder.variables}
    assert set(declared) == set(created)
    for name, axes in declared.items():
        shape = tuple(created[name].shape)
        assert len(axes) == len(shape), name
        for axis, size in zip(axes, shape):
            assert (axis == "latent") == (size == 32), (name, shape, axes)


def test_an_encoder_that_declares_nothing_is_not_silently_unsharded():
    class Undeclared(gsl.SparseEncoder):
        def build(self, input_shape):
            self.weights_ = self.add_weight(
                name="w", shape=(input_shape[-1], self.latent_dim))

    class Partial(gsl.AffineEncoder):
        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(self.latent_dim,))
            super().build(input_shape)

    # Outside a latent layout both build as before.
    Undeclared(4).build((None, 8))
    Partial(4).build((None, 8))
    model_parallel = keras.distribution.ModelParallel(
        layout_map=gsl.latent_layout_map(_mesh()), batch_dim_name="batch")
    with model_parallel.scope():
        with pytest.raises(ValueError, match="Undeclared declares no `latent_axes`"):
            Undeclared(4).build((None, 8))
        with pytest.raises(ValueError, match=(
                "Partial creates the variable 'scale' but its `latent_axes` does not "
                "declare it")):
            Partial(4).build((None, 8))
    layout_map = gsl.latent_layout_map(_mesh())
    with pytest.raises(ValueError, match="No encoder class declares the variable 'w'"):
        layout_map["outer/encoder/w"]
    assert layout_map["outer/encoder/output"] is None   # a tensor, not a variable


def test_the_layout_reads_the_encoder_classes():
    layout_map = gsl.latent_layout_map(_mesh())

    class Scaled(gsl.AffineEncoder):   # defined after the map: still read
        latent_axes = {**gsl.AffineEncoder.latent_axes, "scale_of_latent": ("latent",)}

    assert layout_map["encoder/scale_of_latent"].axes == ("model",)
    assert distribution.encoder_variable_axes("threshold") == ()
    assert layout_map["encoder/threshold"] is None       # BatchTopK's scalar
    del Scaled


def test_the_model_record_survives_a_keras_file_and_old_files_still_load(tmp_path):
    model = gsl.build_sae("batch_topk", 8, 32, k=4, threshold_momentum=0.9)
    model.save(tmp_path / "new.keras")
    loaded = keras.saving.load_model(tmp_path / "new.keras")
    assert loaded.architecture == model.architecture
    assert _architectures.describe(loaded)[0] == "batch_topk"

    # A file saved before the record: no "architecture" in the model config.
    with_edited_config(tmp_path / "new.keras", tmp_path / "old.keras",
                       lambda config: config["config"].pop("architecture"))
    old = keras.saving.load_model(tmp_path / "old.keras")
    assert old.architecture is None
    assert _architectures.describe(old) == (
        "batch_topk", {"k": 4, "k_aux": 512, "dead_steps_threshold": 1000,
                       "aux_coefficient": 1 / 32, "threshold_momentum": 0.9})


def test_interop_reads_the_record_not_the_layers():
    model = gsl.build_sae("relu", 8, 32, sparsity_coefficient=1e-3,
                          weight_by_decoder_norm=True)
    model.set_sparsity_coefficient(0.5)
    assert _architectures.describe(model) == (
        "relu", {"sparsity_coefficient": 0.5, "weight_by_decoder_norm": True})
    model.architecture = {"name": "gated", "arguments": {}}
    with pytest.raises(TypeError, match="records the architecture 'gated'"):
        _architectures.describe(model)
    model.architecture = {"name": "mine", "arguments": {}}
    with pytest.raises(TypeError, match="Cannot export a 'mine' SAE"):
        _architectures.describe(model)


def test_every_exportable_record_has_an_interop_codec():
    defaults = {}
    for record in gsl.ARCHITECTURES.values():
        assert (record.saelens is None) == (record.saelens_tensors is None)
        if record.saelens is not None:
            assert record.saelens_tensors in _architectures.TENSOR_CODECS
        if record.saelens_defaults is not None:
            assert record.saelens not in defaults, "one default per SAELens name"
            defaults[record.saelens] = record.name
    assert sorted(defaults) == sorted(_architectures.saelens_architectures())


def test_record_architecture_refuses_what_json_cannot_save():
    model = gsl.build_topk_sae(8, 32, k=4)
    assembly.record_architecture(model, "topk", k=np.int64(4), sizes=(1, 2))
    assert model.architecture["arguments"] == {"k": 4, "sizes": [1, 2]}
    with pytest.raises(TypeError, match="`k` must be None, a bool, a number"):
        assembly.record_architecture(model, "topk", k=object())
    with pytest.raises(TypeError, match="`architecture` must be None or a dict"):
        model.architecture = "topk"


def test_register_architecture_checks_the_record():
    with pytest.raises(ValueError, match="An architecture named 'relu' is already"):
        gsl.register_architecture(gsl.Architecture("relu", gsl.build_relu_sae,
                                                   gsl.ReLUEncoder))
    with pytest.raises(TypeError, match="must be a `SparseEncoder` subclass that declares"):
        gsl.register_architecture(gsl.Architecture("new", gsl.build_relu_sae,
                                                   gsl.SparseEncoder))
    assert "new" not in gsl.ARCHITECTURES


def test_the_model_declares_its_caches():
    model = gsl.build_relu_sae(8, 32, sparsity_coefficient=1e-3)
    assert model.caches.latents_model is None
    assert model.caches.device_resident_runners == {}
    model.caches.device_resident_runners["key"] = "runner"
    model.compile(optimizer="adam")
    assert model.caches.device_resident_runners == {}
    assert "caches" not in model.get_config()
    with pytest.raises(AttributeError):
        model.caches.anything_else = 1     # only the declared caches


def test_the_worked_example_of_docs_architecture_runs(tmp_path):
    text = (ROOT / "docs" / "architecture.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```\n", text, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "gain_relu.keras").exists()
