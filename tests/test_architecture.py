"""The architecture's rules, checked on the source: layers, no cycles, small modules.

Dependencies run one way: the Python API (the ``coyo_db`` package itself) -> cli -> synth (the
demo) -> features (dedup, audit, labels, export, search, stats, query) -> ingest -> catalog ->
the leaves (errors, progress, version). Imports inside
functions count (they run too); imports under ``if TYPE_CHECKING:`` count for the layers but
not for cycles, since they never execute.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each importable package's source lives (pyproject's package-dir).
PACKAGE_DIRS = {
    "coyo_db": ROOT / "coyo_db",
    "coyo_db.cli": ROOT / "cli",
    "coyo_db.ingest": ROOT / "ingest",
}
MAX_LINES = 500

LEAVES = {
    "coyo_db.errors",
    "coyo_db.faults",
    "coyo_db.id_lookup",
    "coyo_db.lru",
    "coyo_db.progress",
    "coyo_db.version",
}
API = "coyo_db"  # the package itself is the Python API: Catalog and one function per command
FEATURES = ("audit", "dedup", "export", "labels", "results", "review", "search", "serve", "stats")


def layer(module: str) -> int:
    """0 leaves, 1 catalog, 2 ingest, 3 features, 4 synth and the demo, 5 the command line,
    6 the Python API (``coyo_db`` itself)."""
    if module == API:
        return 6
    if module in LEAVES:
        return 0
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top == "catalog" or module == "coyo_db.sql":
        return 1
    if top == "ingest":
        return 2
    if top in FEATURES:
        return 3
    if top == "synth":
        return 4
    if top == "cli":
        return 5
    raise AssertionError(f"{module}: not in any layer; add its package to test_architecture")


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "coyo_db" and parts and parts[0] in ("cli", "ingest"):
                continue
            found[name] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str, path: Path, known: set[str]) -> list[tuple[str, bool, list[str]]]:
    """(imported module, under TYPE_CHECKING, names imported) for every coyo_db import."""
    tree = ast.parse(path.read_text("utf-8"))
    found: list[tuple[str, bool, list[str]]] = []

    def resolve(name: str) -> str:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("coyo_db"):
                    found.append((resolve(alias.name), typing_only, []))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("coyo_db")
        ):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in known:  # `from coyo_db.x import module`
                    found.append((sub, typing_only, []))
                else:
                    found.append((resolve(str(node.module)), typing_only, [alias.name]))
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(tree, False)
    return [(target, t, names) for target, t, names in found if target != module]


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, bool, list[str]]]]:
    found = modules()
    known = set(found) | {"coyo_db.sql", "coyo_db.data"}
    return {name: imports(name, path, known) for name, path in found.items()}


def test_every_module_is_small() -> None:
    big = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text("utf-8").splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_dependencies_run_one_way(graph) -> None:
    wrong = [
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, edges in graph.items()
        for target, _, _ in edges
        if target.startswith("coyo_db") and layer(target) > layer(source)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles(graph) -> None:
    edges = {
        source: sorted({t for t, typing_only, _ in targets if not typing_only and t in graph})
        for source, targets in graph.items()
    }
    # Tarjan's strongly connected components; a component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            # a package's __init__ re-exporting its own submodule is not a cycle
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_names_across_modules(graph) -> None:
    private = [
        f"{source} imports {name} from {target}"
        for source, targets in graph.items()
        for target, _, names in targets
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not private, "\n".join(private)
