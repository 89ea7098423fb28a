"""The builders in `gated_sae_layers.models.builders` are copyable.

Each builder module imports only public modules, so its source copied into a
user's file builds the same model as the package's builder.
"""

import ast
import importlib
import pathlib
import sys

import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers.models import builders
from tests.harness import ARCHITECTURES, architecture_kwargs

BUILDERS_DIR = pathlib.Path(builders.__file__).parent
BUILDER_MODULES = sorted(
    p.stem for p in BUILDERS_DIR.glob("*.py")
    if p.stem not in ("__init__", "assembly", "ends"))

# (builder name, kwargs) of each module, with tiny dims (8 -> 32).
CALLS = {
    "gated": [("build_gated_sae", dict(sparsity_coefficient=1e-3)),
              ("build_gated_sae", dict(sparsity_coefficient=1e-3,
                                       remove_parallel_gradient=True))],
    "relu": [("build_relu_sae", dict(sparsity_coefficient=1e-3)),
             ("build_relu_sae", dict(sparsity_coefficient=1e-3,
                                     weight_by_decoder_norm=True))],
    "jumprelu": [("build_jumprelu_sae", dict(sparsity_coefficient=1e-2))],
    "topk": [("build_topk_sae", dict(k=4)), ("build_batch_topk_sae", dict(k=4))],
    "matryoshka": [("build_matryoshka_sae", dict(k=4, prefix_sizes=[4, 16]))],
    "registry": [("build_sae", dict(architecture="relu", sparsity_coefficient=1e-3)),
                 ("build_sae", dict(architecture="matryoshka", k=4))],
    "transcoder": [("build_transcoder", dict(architecture="topk", output_dim=5, k=4,
                                             skip=True)),
                   ("build_transcoder", dict(architecture="gated", output_dim=8,
                                             sparsity_coefficient=1e-3))],
    # One layer of width 8: the test's batch is 8 wide.
    "crosscoder": [("build_crosscoder", dict(num_layers=1, sparsity_coefficient=1e-3)),
                   ("build_crosscoder", dict(num_layers=1, architecture="topk", k=4))],
}


def imported_modules(path):
    """Every dotted module path, and every name imported from one, in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import breaks a copy"
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def test_every_builder_module_is_covered():
    assert set(BUILDER_MODULES) == set(CALLS)


@pytest.mark.parametrize("module", BUILDER_MODULES + ["__init__"])
def test_builder_modules_import_only_public_modules(module):
    imports = imported_modules(BUILDERS_DIR / f"{module}.py")
    assert imports
    private = [name for name in imports
               if any(part.startswith("_") for part in name.split("."))]
    assert not private, f"{module}.py imports private {private}"


def describe(model):
    """What a copy must reproduce: names, loss terms, metrics, weight shapes."""
    return {
        "name": model.name,
        "outputs": sorted(model.output),
        "layers": [(layer.name, type(layer).__name__) for layer in model.layers],
        "loss_terms": [(key, loss.name, type(loss).__name__)
                       for key, loss in model.loss_terms.items()],
        "metrics": {key: [metric.name for metric in metrics]
                    for key, metrics in model.metric_terms.items()},
        "weights": [tuple(weight.shape) for weight in model.weights],
    }


@pytest.fixture
def copied_module(tmp_path):
    """Imports the source of a builder module from `tmp_path/my_variant.py`."""
    imported = []

    def copy(module):
        source = (BUILDERS_DIR / f"{module}.py").read_text()
        (tmp_path / "my_variant.py").write_text(source)
        sys.path.insert(0, str(tmp_path))
        importlib.invalidate_caches()
        imported.append(importlib.import_module("my_variant"))
        return imported[-1]

    yield copy
    sys.modules.pop("my_variant", None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize("module", sorted(CALLS))
def test_a_copied_builder_builds_the_same_model(module, copied_module):
    copy = copied_module(module)
    original = importlib.import_module(f"gated_sae_layers.models.builders.{module}")
    assert pathlib.Path(copy.__file__).name == "my_variant.py"
    batch = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    for builder, kwargs in CALLS[module]:
        assert getattr(copy, builder) is not getattr(original, builder)
        kwargs = dict(kwargs, input_dim=8, latent_dim=32)
        args = ((kwargs.pop("architecture"),)
                if builder in ("build_sae", "build_transcoder") else ())
        expected = getattr(original, builder)(*args, **kwargs)
        copied = getattr(copy, builder)(*args, **kwargs)
        assert describe(copied) == describe(expected)
        copied.set_weights(expected.get_weights())
        want = expected.predict_on_batch(batch)
        got = copied.predict_on_batch(batch)
        assert sorted(got) == sorted(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)


def test_the_tests_table_lists_every_architecture():
    """`tests/harness.py`'s table, which the tests run every architecture
    from, is the registry's: a new architecture joins those tests."""
    assert sorted(ARCHITECTURES) == sorted(builders.BUILDERS)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_build_sae_dispatches_to_each_architecture(architecture):
    kwargs = architecture_kwargs(architecture, 32)
    model = gsl.build_sae(architecture, 8, 32, **kwargs)
    direct = builders.BUILDERS[architecture](8, 32, **kwargs)
    assert describe(model) == describe(direct)
    assert model.name == f"{architecture}_sae"


def test_the_package_exports_every_builder():
    for name in builders.__all__:
        if name != "BUILDERS":
            assert getattr(gsl, name) is getattr(builders, name)
