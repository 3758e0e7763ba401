"""The package layout's promises: no import circles, one module that knows
the lock's name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BUILDLIB = Path(__file__).resolve().parent.parent / "buildlib"


def import_graph() -> dict[str, set[str]]:
    """buildlib module -> the buildlib modules it imports (at any depth of
    the file: lazy imports inside functions count too)."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in BUILDLIB.rglob("*.py"):
        parts = list(path.relative_to(BUILDLIB.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph = {}
    for name, (path, is_package) in modules.items():
        package = name.split(".") if is_package else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    deps.add(candidate if candidate in modules else target)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                found.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                done.add(dep)
                visit(dep, path + [dep], done)

    for name in sorted(graph):
        visit(name, [name], {name})
    return found


@pytest.mark.slow
def test_no_import_circles():
    graph = import_graph()
    assert "buildlib.publish.publisher" in graph and "buildlib.config" in graph["buildlib.publish.publisher"]
    assert cycles(graph) == []


def test_cycles_are_found():
    """The check above can fail: a circle in a made-up graph is reported."""
    assert ["a", "b", "c", "a"] in cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert cycles({"a": {"b"}, "b": {"c"}, "d": {"a"}}) == []


def test_only_layout_spells_the_lock():
    spelled = [p.relative_to(BUILDLIB.parent).as_posix() for p in BUILDLIB.rglob("*.py")
               if '".publish.lock"' in p.read_text()]
    assert spelled == ["buildlib/layout.py"]
