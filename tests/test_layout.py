"""The package's dependencies point one way (the Layout of docs/api.md, enforced).

Every module belongs to a layer; an import (at the top or inside a function)
may reach its own layer or a lower one, never a higher one. There are no
exceptions.
"""

import ast
import pathlib

import gated_sae_layers

PACKAGE = pathlib.Path(gated_sae_layers.__file__).parent

# Lowest first. A module's layer is that of its first path component.
LAYERS = [
    {"_validation", "_keras_compat", "_version"},
    {"distribution", "constraints", "sparse"},
    {"layers"},
    {"losses", "metrics", "schedules"},
    {"activations"},
    {"models"},
    {"callbacks", "resampling", "sparsity_control"},
    {"evaluation", "interop", "plots", "datasets", "dashboard"},
    {"compat"},
    {"demo", "cli", "__init__"},
]


def _layer(component):
    for index, names in enumerate(LAYERS):
        if component in names:
            return index
    raise AssertionError(f"{component!r} is in no layer of tests/test_layout.py")


def _component(module):
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1].removesuffix(".py")


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "gated_sae_layers":
                for alias in node.names:
                    yield node.lineno, f"gated_sae_layers.{alias.name}"
            elif node.module.startswith("gated_sae_layers."):
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gated_sae_layers"):
                    yield node.lineno, alias.name


def _source_component(path):
    relative = path.relative_to(PACKAGE)
    return ("__init__" if relative.parts == ("__init__.py",)
            else relative.parts[0].removesuffix(".py"))


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        _layer(_source_component(path))


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _source_component(path)
        relative = str(path.relative_to(PACKAGE))
        for line, module in _imports(path):
            target = _component(module)
            if target == "__init__" and module != "gated_sae_layers":
                # `from gated_sae_layers import distribution` names a module.
                target = module.split(".")[1]
            if _layer(target) > _layer(source):
                upward.append(f"{relative}:{line} imports {module}")
    assert upward == []
