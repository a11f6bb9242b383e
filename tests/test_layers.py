"""The layers of docs/architecture.md, checked against the imports: no module-level import
cycle in pyro_lvm, and the layers below the training loop never import it."""

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


LOWER = ("pyro_lvm.base", "pyro_lvm.validation", "pyro_lvm.traces", "pyro_lvm.checkpoint", "pyro_lvm.batching",
         "pyro_lvm.callbacks", "pyro_lvm.metrics", "pyro_lvm.psis", "pyro_lvm.report", "pyro_lvm.diagnostics",
         "pyro_lvm.infer", "pyro_lvm.data")


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith(LOWER)))
def test_lower_layers_do_not_import_the_training_loop_or_tasks(module):
    above = {m for m in GRAPH[module] if m in ("pyro_lvm.train", "pyro_lvm.cli") or m.startswith("pyro_lvm.tasks")}
    assert not above, f"{module} imports {sorted(above)}"


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
