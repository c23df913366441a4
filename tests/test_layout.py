"""The tree is the architecture: layers, their allowed dependencies, docstrings, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fundusfeat"

ALLOWED = {
    "io": {"io"},
    "features": {"features", "io"},
    "geometry": {"geometry", "io"},
    "pipeline": {"pipeline", "geometry", "features", "io"},
    "training": {"training", "features", "geometry", "io"},
    "evaluation": {"evaluation", "training", "pipeline", "geometry", "features", "io"},
    "cli": {"cli", "evaluation", "training", "pipeline", "geometry", "features", "io"},
}
"""Layer -> the layers its modules may import (``fundusfeat._version`` is open to all)."""


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p) for p in _modules()}


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The fundusfeat modules ``path`` imports (names as written: a module or a package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "fundusfeat" or node.module.startswith("fundusfeat."):
                found.add(node.module)
                # ``from fundusfeat.io import figures``: the module itself
                found |= {f"{node.module}.{a.name}" for a in node.names} & MODULES
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fundusfeat"}
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def test_at_most_three_modules_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "_version.py"]


def test_every_subpackage_says_its_job():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 60, f"{init} needs a docstring saying its job"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_dependencies_point_down(path):
    layer = _layer(_name(path))
    if layer is None:  # fundusfeat/__init__.py, __main__.py, _version.py
        return
    for module in _imports(path):
        if module == "fundusfeat._version":
            continue
        assert module != "fundusfeat", f"{_name(path)} imports the public API (a cycle)"
        target = _layer(module)
        assert target in ALLOWED[layer], f"{_name(path)} ({layer}) imports {module} ({target})"


def test_no_import_cycle():
    graph = {_name(p): set() for p in _modules()}
    for path in _modules():
        for module in _imports(path, top_level_only=True):
            if module in graph and module != _name(path):
                graph[_name(path)].add(module)
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
