"""The library's import graph: no module imports itself back through others, and the layers import downward.

Every import counts, including the ones under ``if TYPE_CHECKING:`` and inside functions: a circle hidden behind a
lazy import is still two modules that cannot be read (or moved) one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Layers above the core: nothing below them may import them (evaluation builds on training, never the reverse).
UPPER = {"mirage.eval": ("mirage.train", "mirage.data", "mirage.memory", "mirage.models", "mirage.pipeline",
                         "mirage.ops", "mirage.scenes", "mirage.perception", "mirage.camera", "mirage.frames",
                         "mirage.media", "mirage.metrics")}


def module_graph(package: str) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, from the source (nothing is imported)."""
    base = ROOT / package
    names = {}
    for path in base.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: set() for name in names}
    for name, path in names.items():
        package_parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                stem = node.module or ""
                if node.level:
                    stem = ".".join(package_parts[: len(package_parts) - node.level + 1] + ([stem] if stem else []))
                targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in names and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    for package in ("mirage", "mirage_ros"):
        assert cycles(module_graph(package)) == [], package


def test_layers_import_downward():
    graph = module_graph("mirage")
    for upper, lower_layers in UPPER.items():
        for module, imports in graph.items():
            if module.startswith(lower_layers):
                upward = sorted(i for i in imports if i == upper or i.startswith(upper + "."))
                assert not upward, f"{module} imports {upward}"
