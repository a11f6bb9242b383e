"""The layers of docs/architecture.md, checked against the imports: no module-level import
cycle in pyro_lvm, each module imports only from its own layer and those below, and no module
uses a private Pyro name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_lvm"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """The pyro_lvm modules ``path`` imports when it is imported (not inside functions, not
    under ``if TYPE_CHECKING``)."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pyro_lvm")}
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        elif (node.module or "").startswith("pyro_lvm"):
            target = node.module
        else:
            continue
        for alias in node.names:  # `from . import validation` imports the module pyro_lvm.validation
            found.add(f"{target}.{alias.name}" if _exists(f"{target}.{alias.name}") else target)
    return found - {name}


GRAPH = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_no_import_cycle():
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [node, nxt]
                                                            if nxt in path else [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])


# docs/architecture.md's layers, bottom first: a module may import (at module level) from its own
# layer and the ones below. The longest matching prefix places a module.
LAYERS = [
    ("core", ["pyro_lvm.base", "pyro_lvm.validation", "pyro_lvm.traces", "pyro_lvm.checkpoint", "pyro_lvm.plots"]),
    ("data", ["pyro_lvm.data"]),
    ("training", ["pyro_lvm.training", "pyro_lvm.training.batching", "pyro_lvm.training.callbacks",
                  "pyro_lvm.training.runs"]),
    ("evaluation", ["pyro_lvm.evaluation", "pyro_lvm.inspection"]),
    ("infer", ["pyro_lvm.infer"]),
    ("loop", ["pyro_lvm.training.loop", "pyro_lvm.training.distributed", "pyro_lvm.training.tracking"]),
    ("models", ["pyro_lvm.models"]),
    ("apps", ["pyro_lvm", "pyro_lvm.__main__", "pyro_lvm.cli", "pyro_lvm.tasks", "pyro_lvm.reproduce",
              "pyro_lvm.evaluation.compare_runs"]),
]


def layer(module: str) -> int:
    """The index in LAYERS of the layer ``module`` belongs to."""
    matches = [(len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer of docs/architecture.md: add it to LAYERS and the picture"
    return max(matches)[1]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_a_module_imports_only_its_layer_and_those_below(module):
    above = sorted(m for m in GRAPH[module] if layer(m) > layer(module))
    assert not above, (f"{module} (layer {LAYERS[layer(module)][0]}) imports {above} "
                       f"(layers {[LAYERS[layer(m)][0] for m in above]})")


def test_the_package_inits_of_lower_layers_import_nothing():
    """Evaluation reads data through training.batching: importing it must not load the loop."""
    for package in ("training", "evaluation"):
        assert not GRAPH[f"pyro_lvm.{package}"], f"pyro_lvm/{package}/__init__.py imports {GRAPH[f'pyro_lvm.{package}']}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_pyro_names(source: str) -> list[str]:
    """Every use of a private Pyro name in ``source``: ``from pyro.x import _y``, an import of a
    module ``pyro._x``, or an attribute ``_y`` reached from a name bound to Pyro
    (``pyro.poutine.runtime._PYRO_STACK``, ``poutine._x`` after ``import pyro.poutine as poutine``)."""
    tree = ast.parse(source)
    bound, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "pyro":
                    bound.add(a.asname or "pyro")
                    if any(_private(p) for p in a.name.split(".")):
                        found.append(f"line {node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "pyro":
            for a in node.names:
                bound.add(a.asname or a.name)
                if _private(a.name) or any(_private(p) for p in node.module.split(".")):
                    found.append(f"line {node.lineno}: from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_private_name_check_finds_each_kind():
    source = ("import pyro\nimport pyro.poutine as poutine\nfrom pyro.poutine import runtime\n"
              "from pyro.infer.util import _x\nimport pyro._private\n"
              "a = pyro.poutine.runtime._PYRO_STACK\nb = poutine._y\nc = runtime._z\n"
              "d = pyro.__version__\nclass A:\n    def f(self):\n        return self._own\n")
    assert private_pyro_names(source) == [
        "line 4: from pyro.infer.util import _x", "line 5: import pyro._private",
        "line 6: pyro.poutine.runtime._PYRO_STACK", "line 7: poutine._y", "line 8: runtime._z"]


def test_no_private_pyro_names():
    """pyro_lvm uses Pyro's public API only: private names change without notice."""
    found = {str(path.relative_to(PACKAGE.parent)): hits for path in sorted(PACKAGE.rglob("*.py"))
             if (hits := private_pyro_names(path.read_text()))}
    assert not found, f"private Pyro names (use Pyro's public API instead): {found}"
