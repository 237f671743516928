"""The shape of the house, read from the source: no import cycles, no import against the data flow.

Every import of a ``sam4em_live`` module counts, including imports inside functions and under
``TYPE_CHECKING`` (a lazy import is still a dependency). Each top-level unit has a layer; a module may
import its own unit and any lower layer, never a higher one. Within the package graph of modules there
must be no cycle at all.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sam4em_live"

# Lowest first. The data flows down this list: source -> segmenter -> measurement -> statistics -> sinks,
# with the shared vocabulary (frames, particles, results, the control protocol) and file I/O beneath.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("versions", "config", "plugins", "frames", "cli_options"),
    ("particles", "wire"),
    ("results", "control_api"),
    ("io",),
    ("sources",),
    ("sim",),
    ("segment",),
    ("discover",),
    ("measure",),
    ("stats",),
    ("sinks",),
    ("hooks",),
    ("control",),
    ("service",),
    ("analysis", "evaluate", "monitor"),
    ("batch",),
    ("api",),
    ("notebook",),
    ("cli", "__main__", "__init__"),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports (``from pkg import mod`` resolves to the module when it is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("sam4em_live"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sam4em_live"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    graph: dict[str, set[str]] = defaultdict(set)
    for f in files:
        me = module_name(f)
        # a package's own __init__ is imported by every module in it; it is not an edge of the design
        graph[me] = {m for m in imported_modules(f, known) if m != me and not me.startswith(m + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(m) for m in import_graph()}
    assert units - RANK.keys() == set(), "give each new top-level module or package a layer in LAYERS"


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def against_the_flow(graph: dict[str, set[str]]) -> list[str]:
    """The imports of ``graph`` from a module to one in a higher layer."""
    return sorted(f"{me} -> {other}" for me, others in graph.items() for other in others
                  if RANK[unit_of(other)] > RANK[unit_of(me)])


def test_no_import_runs_against_the_data_flow() -> None:
    assert against_the_flow(import_graph()) == []


def test_the_direction_check_finds_an_upward_import() -> None:
    graph = {"sam4em_live.particles": {"sam4em_live.segment.base"}, "sam4em_live.segment.base": {"sam4em_live.frames"}}
    assert against_the_flow(graph) == ["sam4em_live.particles -> sam4em_live.segment.base"]


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_cycle_finder_finds_what_it_should(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected
