"""ncfctl's packages import each other in one direction only: no cycle between subpackages.

Each node is a subpackage (``ncfctl.training``) or a top-level module (``ncfctl.config``); an edge
is any import of one from another, at module level or inside a function (a lazy import still
couples the two). The graph is read from the source with ``ast``, so nothing is imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import ncfctl

PACKAGE = Path(ncfctl.__file__).parent


def _imported(tree: ast.AST) -> Iterable[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_graph(root: Path = PACKAGE) -> dict[str, dict[str, str]]:
    """``{node: {imported node: a file that imports it}}`` for the package at ``root``."""
    nodes = {path.stem for path in root.glob("*.py")} | {path.parent.name for path in root.glob("*/__init__.py")}
    nodes -= {"__init__", "__main__"}
    graph: dict[str, dict[str, str]] = {node: {} for node in nodes}
    for path in sorted(root.rglob("*.py")):
        source = path.relative_to(root).parts[0].removesuffix(".py")
        if source not in graph:
            continue
        for name in _imported(ast.parse(path.read_text(encoding="utf-8"))):
            parts = name.split(".")
            if parts[0] == root.name and len(parts) > 1 and parts[1] in graph and parts[1] != source:
                graph[source].setdefault(parts[1], str(path.relative_to(root)))
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None when the graph is acyclic (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, {})):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_ncfctl_packages():
    graph = import_graph()
    assert {"training", "pruning", "aws", "serving", "compile", "masks"} <= graph.keys()
    cycle = find_cycle(graph)
    assert cycle is None, (
        "import cycle: "
        + " -> ".join(f"{a} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))
        + f" -> {cycle[-1]}"
    )


def test_the_check_finds_a_cycle(tmp_path):
    """The detector itself: a package whose subpackages import each other (one lazily) is caught."""
    package = tmp_path / "ncfctl"
    for name, body in {
        "aws": "from ncfctl.training import worker\n",
        "training": "def f():\n    from ncfctl.aws.jobs import wait_for\n",
        "data": "import ncfctl.config\n",
    }.items():
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text(body)
    (package / "config.py").write_text("")
    graph = import_graph(package)
    assert graph["data"] == {"config": "data/__init__.py"}
    assert find_cycle(graph) == ["aws", "training", "aws"]
