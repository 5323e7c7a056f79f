"""Imports run one way: base -> layers -> shared -> models -> weights -> engine -> command lines.

Read with ``ast`` (imports inside functions count too). A module may import modules of its own
rank or below, never above; no two modules import each other, directly or round a cycle; a
method folder (``zoo/models/<method>/``) is imported only by itself: shared code knows no method
(the registries find the method folders by name at run time).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Rank of each module, by the longest matching prefix.
RANKS = {
    "zoo.errors": 0, "zoo.registry": 0, "zoo.io": 0, "zoo.archive": 0,
    "zoo.layers": 1, "zoo.distributed": 1, "zoo.search": 1, "zoo.kmeans": 1,
    "zoo.data": 2, "zoo.metrics": 2, "zoo.task": 2, "zoo.settings": 0,
    # descriptor extraction knows no method and sits below the models: training tasks embed with it too
    "zoo.engine.extract": 2,
    # the hardware's precision choice knows only torch: extraction at any level uses it
    "zoo.engine.precision": 1,
    "zoo.models": 3,
    "zoo": 4, "zoo.hub": 4, "zoo.export": 4, "zoo.variants": 4, "zoo.drive": 4,
    "zoo.engine": 5, "zoo.retrieve": 5, "zoo.index": 5, "zoo.geo": 5, "zoo.onnx": 5, "zoo.publish": 5,
    "zoo.__main__": 6, "zoo.cli": 6, "hubconf": 6, "training": 6, "eval": 6, "bench": 6,
}
RANK_NAMES = ["base", "layers", "shared", "models", "weights", "engine", "command lines"]
METHOD_PACKAGE = "zoo.models."


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def rank_of(module: str, ranks: dict[str, int]) -> int | None:
    best = None
    for prefix, rank in ranks.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, rank)
    return None if best is None else best[1]


def method_of(module: str) -> str | None:
    """``zoo.models.salad.task`` -> ``zoo.models.salad``; None outside a method folder."""
    parts = module.split(".")
    if module.startswith(METHOD_PACKAGE) and len(parts) >= 3 and parts[2] != "cards":
        return ".".join(parts[:3])
    return None


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(root: Path, packages: list[str]) -> dict[str, tuple[Path, set[str]]]:
    files = [p for package in packages for p in ((root / package).rglob("*.py") if (root / package).is_dir()
                                                 else [root / f"{package}.py"]) if p.is_file()]
    known = {module_name(p, root) for p in files}
    return {module_name(p, root): (p, imports_of(p, module_name(p, root), known)) for p in files}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def violations(root: Path, packages: list[str], ranks: dict[str, int]) -> list[str]:
    graph = import_graph(root, packages)
    problems = [f"import cycle: {' <-> '.join(c)}" for c in find_cycles({m: deps for m, (_, deps) in graph.items()})]
    for module, (path, deps) in sorted(graph.items()):
        own = rank_of(module, ranks)
        if own is None:
            problems.append(f"{path}: module {module} has no rank in the layering")
            continue
        for dep in sorted(deps):
            dep_rank = rank_of(dep, ranks)
            if dep_rank is not None and dep_rank > own:
                problems.append(f"{module} ({RANK_NAMES[own]}) imports {dep} ({RANK_NAMES[dep_rank]}): against the direction")
            method = method_of(dep)
            if method and method_of(module) != method and own < ranks["zoo.__main__"]:
                problems.append(f"{module} imports the method folder {dep}: shared code knows no method")
    return problems


def test_the_zoo_imports_one_way_without_cycles():
    assert violations(REPO, ["zoo", "training", "eval", "bench", "hubconf"], RANKS) == []


def test_the_check_finds_a_cycle_an_upward_import_and_a_method_import(tmp_path):
    pkg = tmp_path / "zoo"
    (pkg / "layers").mkdir(parents=True)
    (pkg / "models" / "alpha").mkdir(parents=True)
    (pkg / "engine").mkdir()
    for folder in (pkg, pkg / "layers", pkg / "models", pkg / "models" / "alpha", pkg / "engine"):
        (folder / "__init__.py").write_text("")
    (pkg / "layers" / "a.py").write_text("from zoo.layers import b\n")
    (pkg / "layers" / "b.py").write_text("def f():\n    import zoo.layers.a\n")   # a cycle through a function
    (pkg / "layers" / "c.py").write_text("from zoo.engine.loop import run\n")    # upward
    (pkg / "engine" / "loop.py").write_text("from zoo.models.alpha.net import Net\n")  # shared code, a method
    (pkg / "models" / "alpha" / "net.py").write_text("Net = object\n")
    found = violations(tmp_path, ["zoo"], RANKS)
    assert "import cycle: zoo.layers.a <-> zoo.layers.b" in found
    assert any(p.startswith("zoo.layers.c (layers) imports zoo.engine.loop (engine)") for p in found)
    assert any(p.startswith("zoo.engine.loop imports the method folder zoo.models.alpha.net") for p in found)
    # the clean part of the tree raises nothing else
    assert len(found) == 3, found
