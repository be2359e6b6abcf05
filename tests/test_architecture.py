"""The package's shape, as docs/architecture.md describes it: no import cycle among its modules
or its subpackages (imports inside functions count), no module so long that it is several modules
in one file, and one owner of the run folder's file names. Static: the source is parsed, nothing
is imported (but runfolder, for its list of names)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from factrecall_bench import runfolder

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


def _statements(body: list[ast.stmt], in_functions: bool = True) -> Iterator[ast.stmt]:
    """The module's statements, function bodies included (an import inside a function is still a
    dependency: hiding it there breaks no cycle), `if TYPE_CHECKING:` blocks left out (they are
    annotations only). With `in_functions` False: only what runs when the module is imported."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not in_functions:
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _statements(node.orelse, in_functions)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, None)
            if isinstance(children, list) and children and isinstance(children[0], ast.AST):
                yield from _statements(children, in_functions)  # type: ignore[arg-type]


def _imported_names(module: str, path: Path, known: set[str], in_functions: bool = True
                    ) -> set[str]:
    """The known modules `module` imports (inside its functions too), as named in its import
    statements."""
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _statements(tree.body, in_functions):
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


def import_graph(in_functions: bool = True) -> dict[str, set[str]]:
    """module -> the package modules it imports (at import time or inside a function). Importing
    a.b.c runs a and a.b too, except the packages `module` itself sits in (already being imported
    when it runs)."""
    modules = _modules()
    known = set(modules)
    graph = {}
    for module, path in modules.items():
        own = set(_ancestors(module))
        edges = set()
        for name in _imported_names(module, path, known, in_functions):
            edges.add(name)
            edges.update(a for a in _ancestors(name) if a not in own and a in known)
        edges.discard(module)
        graph[module] = edges
    return graph


def unit_of(module: str) -> str:
    """The part of the package a module belongs to: its top-level module or subpackage
    (factrecall_bench.verdicts.claims -> factrecall_bench.verdicts; the TUI is one)."""
    for prefix in sorted(PACKAGES, key=len, reverse=True):
        if module == prefix or module.startswith(f"{prefix}."):
            rest = module[len(prefix) + 1:]
            if prefix != "factrecall_bench" or not rest:
                return prefix
            return f"{prefix}.{rest.split('.')[0]}"
    return module


def subpackage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded onto units: an edge between two units for any edge between their
    modules."""
    folded: dict[str, set[str]] = {}
    for module, targets in graph.items():
        unit = unit_of(module)
        folded.setdefault(unit, set()).update(unit_of(t) for t in targets if unit_of(t) != unit)
    return folded


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
    # an import inside a function counts (app imports the report inside run_command)
    assert "factrecall_bench.report" in graph["factrecall_bench.app"]
    assert "factrecall_bench.report" not in import_graph(in_functions=False)["factrecall_bench.app"]
    assert "factrecall_bench.verdicts.evidence" in graph["factrecall_bench.verdicts.claims"]
    assert "factrecall_bench.verdicts" in graph["factrecall_bench.suite"]  # the package runs first
    assert "factrecall_bench.tui.state" in graph["factrecall_bench.tui.app"]
    assert "factrecall_bench.cli" not in graph["factrecall_bench.app"]


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_units_fold_modules_onto_their_subpackage() -> None:
    assert unit_of("factrecall_bench.verdicts.claims") == "factrecall_bench.verdicts"
    assert unit_of("factrecall_bench.runner") == "factrecall_bench.runner"
    assert unit_of("factrecall_bench.tui.state") == "factrecall_bench.tui"
    modules = {"factrecall_bench.a.x": {"factrecall_bench.b"}, "factrecall_bench.b":
               {"factrecall_bench.a.y"}, "factrecall_bench.a.y": set()}
    assert import_cycles(modules) == []  # no cycle between modules, but one between units
    assert import_cycles(subpackage_graph(modules)) == [["factrecall_bench.a", "factrecall_bench.b"]]


def test_no_import_cycle_in_the_package() -> None:
    """Imports inside functions count: one inside a function hides a cycle, it does not break it
    (move the code to where it belongs, or let the caller pass it in)."""
    cycles = import_cycles(import_graph())
    assert not cycles, f"import cycles between modules: {cycles}"


def test_no_import_cycle_between_subpackages() -> None:
    """trace/ never imports the runner while the runner imports trace/, and so on: each
    subpackage (and top-level module) sits on one side of every other."""
    cycles = import_cycles(subpackage_graph(import_graph()))
    assert not cycles, f"import cycles between subpackages and modules: {cycles}"


# --- the run folder has one owner ---------------------------------------------------------------

RUN_FOLDER_OWNERS = {"factrecall_bench.runfolder"}
"""The modules that may spell a run-folder file name (all others use runfolder's constants)."""


def run_folder_file_names() -> set[str]:
    """Every file name runfolder owns: its RunFolder / SuiteFolder constants and CHECKPOINT_*."""
    names = {value for cls in (runfolder.RunFolder, runfolder.SuiteFolder)
             for key, value in vars(cls).items() if key.isupper() and isinstance(value, str)}
    names |= {value for key, value in vars(runfolder).items()
              if key.startswith("CHECKPOINT_") and isinstance(value, str)}
    return {name for name in names if "." in name.strip(".")}  # files, not folders


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            for statement in node.body:  # attribute docstrings too (a string after a field)
                if (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
                        and isinstance(statement.value.value, str)):
                    found.add(id(statement.value))
    return found


def file_name_literals(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, string) of each string constant that names one of `names` as a path: the name itself,
    or ending in `/<name>` (docstrings and prose that mentions a file are left alone)."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    pattern = re.compile(r"(^|/)(" + "|".join(map(re.escape, sorted(names))) + r")$")
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings and pattern.search(node.value.strip())]


def test_the_file_name_check_finds_literal_paths() -> None:
    names = {"result.json", "events.jsonl"}
    source = ('"""Reads result.json."""\nA = "result.json"\nB = folder / "events.jsonl"\n'
              'C = f"{folder}/result.json"\nD = "no valid result.json here"\n')
    assert [line for line, _ in file_name_literals(source, names)] == [2, 3, 4]
    assert {"result.json", "config.json", "events.jsonl", "verdicts.json", "report.md",
            "samples.jsonl", "analyses.json",
            "trace-recorder.safetensors"} <= run_folder_file_names()


def test_no_run_folder_file_name_outside_its_owner() -> None:
    """runfolder.py alone names the files of a run folder: everyone else goes through RunFolder,
    SuiteFolder and the CHECKPOINT_* constants."""
    names = run_folder_file_names()
    found = {f"{module}:{line}": value for module, path in _modules().items()
             if module not in RUN_FOLDER_OWNERS
             for line, value in file_name_literals(path.read_text("utf-8"), names)}
    assert not found, f"run-folder file names spelled outside runfolder.py: {found}"


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


# --- a suite is expanded once ------------------------------------------------------------------


def calls_of(source: str, function: str) -> list[int]:
    """The lines that call `function` by name (`f(...)` or `module.f(...)`)."""
    return [node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
            and (getattr(node.func, "id", None) == function
                 or getattr(node.func, "attr", None) == function)]


def test_the_call_check_finds_calls_by_name_and_attribute() -> None:
    source = "a = expand_suite(s)\nb = suite.expand_suite(s)\nc = s.runs\nexpand_suite\n"
    assert calls_of(source, "expand_suite") == [1, 2]


def test_only_the_suite_expands_a_suite() -> None:
    """A Suite builds its runs once, when it is made (`suite.runs`, `suite.suite_hash`); a use
    case that called expand_suite would build every run config again."""
    found = {f"{module}:{line}" for module, path in _modules().items()
             if module != "factrecall_bench.suite"
             for line in calls_of(path.read_text("utf-8"), "expand_suite")}
    assert not found, f"expand_suite called outside suite.py (read suite.runs): {found}"
