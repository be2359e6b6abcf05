"""The package's shape, as docs/architecture.md describes it: no import cycle among its modules,
and no module so long that it is several modules in one file. Static: the source is parsed, nothing
is imported."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"factrecall_bench": ROOT / "factrecall_bench", "factrecall_bench.tui": ROOT / "tui"}
"""Module name prefix -> the folder it is read from (tui/ is installed as factrecall_bench.tui)."""
MAX_LINES = 500
LONG_MODULES: dict[str, str] = {}
"""Modules allowed over MAX_LINES, each with the reason. Remove an entry when its module is split."""


def _modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([prefix, *parts])] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run when the module is imported: not function bodies, not TYPE_CHECKING blocks
    (an import inside a function is the deliberate way to break a cycle)."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _import_time_statements(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, None)
            if isinstance(children, list) and children and isinstance(children[0], ast.AST):
                yield from _import_time_statements(children)  # type: ignore[arg-type]


def _imported_names(module: str, path: Path, known: set[str]) -> set[str]:
    """The known modules `module` imports at import time, as named in its import statements."""
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _import_time_statements(tree.body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in known else base)
    return {name for name in names if name in known}


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules its import runs first. Importing a.b.c runs a and a.b too,
    except the packages `module` itself sits in (already being imported when it runs)."""
    modules = _modules()
    known = set(modules)
    graph = {}
    for module, path in modules.items():
        own = set(_ancestors(module))
        edges = set()
        for name in _imported_names(module, path, known):
            edges.add(name)
            edges.update(a for a in _ancestors(name) if a not in own and a in known)
        edges.discard(module)
        graph[module] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_graph_sees_the_imports_it_should() -> None:
    """A guard on the parser: known edges are found, so an empty cycle list means something."""
    graph = import_graph()
    assert "factrecall_bench.runner" in graph["factrecall_bench.orchestrate"]
    assert "factrecall_bench.verdicts.evidence" in graph["factrecall_bench.verdicts.claims"]
    assert "factrecall_bench.verdicts" in graph["factrecall_bench.suite"]  # the package runs first
    assert "factrecall_bench.tui.state" in graph["factrecall_bench.tui.app"]
    assert "factrecall_bench.cli" not in graph["factrecall_bench.app"]


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package() -> None:
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles (break one edge, or import inside the function that needs " \
                       f"it): {cycles}"


def test_the_app_never_imports_the_cli() -> None:
    """app.py holds the use cases; the CLI parses flags, calls them and prints (never the reverse),
    not even inside a function."""
    source = (PACKAGES["factrecall_bench"] / "app.py").read_text("utf-8")
    tree = ast.parse(source)
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert "factrecall_bench.cli" not in imported
    assert not any(isinstance(node, ast.ImportFrom) and node.module == "factrecall_bench"
                   and any(alias.name == "cli" for alias in node.names) for node in ast.walk(tree))


def test_no_module_over_the_line_limit() -> None:
    too_long = {module: n for module, path in _modules().items()
                if (n := len(path.read_text("utf-8").splitlines())) > MAX_LINES
                and module not in LONG_MODULES}
    assert not too_long, f"modules over {MAX_LINES} lines (split along their banners): {too_long}"
