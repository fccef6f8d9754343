"""The package's shape: subpackages by concern, a short top level, and no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bgmgen"
SUBPACKAGES = ("video", "music", "sound", "training", "evaluation")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every bgmgen module ``path`` imports, wherever the import stands (functions and TYPE_CHECKING too)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from bgmgen.video import decode` imports the module bgmgen.video.decode.
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "bgmgen":
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    graph = {module_name(p): imported_modules(p, known) for p in paths}
    # A package's __init__ runs before any of its modules: importing bgmgen.video.decode imports bgmgen.video.
    for name in list(graph):
        parent = name.rpartition(".")[0]
        graph[name] -= {name}
        if parent in graph and parent != "bgmgen":
            graph[name].add(parent)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_lazy_and_type_checking_imports():
    graph = import_graph()
    assert "bgmgen.video.features" in graph["bgmgen.video.visual"]  # a module-level import
    assert "bgmgen.pipeline" in graph["bgmgen.batch"]  # imported inside a function
    assert "bgmgen.video.features" in graph["bgmgen.music.plan"]  # under TYPE_CHECKING only


def test_the_package_is_grouped_by_concern():
    for name in SUBPACKAGES:
        assert (PACKAGE / name / "__init__.py").is_file(), name
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 10, top
