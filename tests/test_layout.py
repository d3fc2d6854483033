"""The shape of the packages: no import cycles, layers that only import downwards, modules of a
readable size."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = ("chatstream", "sessions")
LONG = 300
TOO_LONG = 400
LONG_REASON = "Why one module:"


def modules() -> dict[str, Path]:
    """Every module of our packages by dotted name (a package by its ``__init__``)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs (at module level or in a function), not type-only ones."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _imports_of(child))
            continue
        yield from _imports_of(node)


def _imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _imports(node)


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that importing ``name`` runs (parent packages included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for candidate in candidates:
            parts = candidate.split(".")
            for end in range(1, len(parts) + 1):
                module = ".".join(parts[:end])
                if module in known and module != name:
                    targets.add(module)
    return targets


GRAPH = {name: imported(name, path, modules()) for name, path in modules().items()}


def test_there_is_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1 and not _parent(target, node):
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def _parent(package: str, module: str) -> bool:
    """Importing a package's submodule runs the package first: not a cycle of ours."""
    return module.startswith(package + ".")


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("sessions", "chatstream"),
        ("chatstream.engines", "chatstream.http"),
        ("chatstream.engines", "chatstream.chat"),
        ("chatstream.admission", "chatstream.http"),
        ("chatstream.chat", "chatstream.http"),
        ("chatstream.conversations", "chatstream.http"),
    ],
)
def test_layers_import_only_downwards(lower: str, upper: str) -> None:
    offending = {
        (name, target)
        for name, targets in GRAPH.items()
        if name == lower or name.startswith(lower + ".")
        for target in targets
        if target == upper or target.startswith(upper + ".")
    }
    assert offending == set()


def test_the_lower_layers_know_no_web_framework() -> None:
    offending = []
    for name, path in modules().items():
        if name.startswith(("chatstream.engines", "chatstream.admission")) or name in (
            "chatstream.errors",
            "chatstream.config",
        ):
            for node in _imports(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                )
                offending += [(name, n) for n in names if n and n.split(".")[0] in WEB]
    assert offending == []


WEB = {"starlette", "fastapi", "uvicorn"}


def test_modules_are_of_a_readable_size() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in sizes.items() if n > TOO_LONG} == {}
    unexplained = {
        name: n
        for name, n in sizes.items()
        if n > LONG
        and LONG_REASON not in (ast.get_docstring(ast.parse(modules()[name].read_text())) or "")
    }
    assert unexplained == {}
