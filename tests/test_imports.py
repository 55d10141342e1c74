"""The import graph keeps the layout honest: no cycles among streamfn's modules, the core free of
client libraries, the bench tool and the test support imported by nothing in the library, and
the connectors reached only as ``streamfn.connectors``.

Every import counts, whether at module level, under ``if TYPE_CHECKING:`` or inside a function:
a type-only cycle is still two modules that cannot be understood apart. The files are parsed,
not imported, so the test needs no extra installed and runs in a fraction of a second. Names
handed to ``importlib`` as strings (``streamfn bench`` finding ``streamfn.bench.cli``) are not
imports and are not seen here.
"""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "streamfn"
BENCH = "streamfn.bench"
TESTING = "streamfn.testing"
CONNECTORS = "streamfn.connectors"
#: The client libraries that come with an extra; only connectors, the bench tool and the test
#: support may import them.
CLIENT_LIBRARIES = frozenset(
    {"aiokafka", "aiobotocore", "botocore", "boto3", "uvicorn", "httptools", "uvloop"}
    | {"aiormq", "aio_pika", "pamqp", "yarl", "samtranslator", "yaml", "awslambdaric"}
)
#: Modules of the core that may import a client library, and only inside a function: runtime
#: picks uvloop when it is installed.
LAZY_CLIENTS = {"streamfn.runtime": frozenset({"uvloop"})}
#: Subpackages of the core that come with an extra of their own, and the libraries it brings;
#: test_the_cli_loads_no_extra_until_used checks the CLI reaches them only when they are used.
EXTRA_CLIENTS = {"streamfn.sam": frozenset({"samtranslator", "yaml"})}
#: Folders besides the library whose code imports streamfn as a user would, so never the
#: repository's connectors/ folder by its top-level name.
USER_CODE = ("tests", "examples", "bench")


@dataclass(frozen=True, slots=True)
class Import:
    target: str  # the absolute name of the module imported (or of its package)
    line: int
    in_function: bool
    relative: bool


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    path: Path
    imports: tuple[Import, ...]


def _module_files(folder: Path, prefix: str) -> Iterator[tuple[str, Path, bool]]:
    """(dotted name, file, is package) of every module under ``folder``; symlinked folders are
    followed, so streamfn/connectors (a link to the repository's connectors/) is included."""
    for directory, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        parts = Path(directory).relative_to(folder).parts
        for filename in sorted(filenames):
            if not filename.endswith(".py"):
                continue
            stem = filename[:-3]
            is_package = stem == "__init__"
            name = ".".join((prefix, *parts) if is_package else (prefix, *parts, stem))
            yield name, Path(directory, filename), is_package


class _Collector(ast.NodeVisitor):
    """Every import statement of one module, its relative names resolved against the module."""

    def __init__(self, name: str, is_package: bool, known: frozenset[str]) -> None:
        self.package = name if is_package else name.rpartition(".")[0]
        self.known = known
        self.depth = 0
        self.found: list[Import] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, target: str, node: ast.Import | ast.ImportFrom) -> None:
        relative = isinstance(node, ast.ImportFrom) and node.level > 0
        self.found.append(Import(target, node.lineno, self.depth > 0, relative))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            assert node.level - 1 < len(parts), f"{self.package}: import beyond the top level"
            base = ".".join(parts[: len(parts) - node.level + 1])
            origin = f"{base}.{node.module}" if node.module else base
        else:
            assert node.module is not None
            origin = node.module
        # ``from pkg import sub`` imports the submodule, not the package's own code.
        for alias in node.names:
            submodule = f"{origin}.{alias.name}"
            self._add(submodule if submodule in self.known else origin, node)


def _parse(files: list[tuple[str, Path, bool]], known: frozenset[str]) -> dict[str, Module]:
    modules = {}
    for name, path, is_package in files:
        collector = _Collector(name, is_package, known)
        collector.visit(ast.parse(path.read_bytes(), str(path)))
        modules[name] = Module(name, path, tuple(collector.found))
    return modules


@functools.cache
def library() -> dict[str, Module]:
    """streamfn's own modules, connectors, bench tool and test support included."""
    files = list(_module_files(ROOT / PACKAGE, PACKAGE))
    return _parse(files, frozenset(name for name, _, _ in files))


def user_code() -> dict[str, Module]:
    """The library and the repository's code around it (tests, examples, bench)."""
    files = [f for folder in USER_CODE for f in _module_files(ROOT / folder, folder)]
    return {**library(), **_parse(files, frozenset(name for name, _, _ in files))}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _where(module: Module, imported: Import) -> str:
    return f"{module.path.relative_to(ROOT)}:{imported.line}"


def tangles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components that hold a cycle (Tarjan): each module in one can
    reach every other through imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest way from the component's first module back to itself (breadth first), the
    module repeated at the end."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle in {sorted(component)}")


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    return {
        name: {i.target for i in module.imports if i.target in modules}
        for name, module in modules.items()
    }


def describe_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One line per tangle: a cycle through it, and the other modules caught in it."""
    lines = []
    for component in tangles(graph):
        cycle = cycle_in(graph, component)
        others = sorted(component - set(cycle))
        also = f" (also caught: {', '.join(others)})" if others else ""
        lines.append(" -> ".join(cycle) + also)
    return sorted(lines)


def test_streamfn_has_no_import_cycle_type_only_and_local_imports_included() -> None:
    cycles = describe_cycles(import_graph(library()))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_cycles_are_reported_by_the_modules_along_them() -> None:
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": {"b"}, "e": {"e"}, "f": {"a"}}
    assert describe_cycles(graph) == ["a -> b -> c -> a (also caught: d)", "e -> e"]
    assert describe_cycles({"a": {"b"}, "b": set()}) == []


def test_nothing_outside_the_bench_subpackage_imports_it() -> None:
    offenders = [
        f"{_where(module, i)}: {module.name} imports {i.target}"
        for module in library().values()
        if not _within(module.name, BENCH)
        for i in module.imports
        if _within(i.target, BENCH)
    ]
    assert not offenders, "\n".join(offenders)


def test_the_library_does_not_import_the_test_support() -> None:
    offenders = [
        f"{_where(module, i)}: {module.name} imports {i.target}"
        for module in library().values()
        if not _within(module.name, TESTING) and not _within(module.name, BENCH)
        for i in module.imports
        if _within(i.target, TESTING)
    ]
    assert not offenders, "\n".join(offenders)


def test_the_core_imports_no_client_library() -> None:
    offenders = []
    for module in library().values():
        if any(_within(module.name, p) for p in (CONNECTORS, BENCH, TESTING)):
            continue
        lazy = LAZY_CLIENTS.get(module.name, frozenset())
        extra = frozenset().union(
            *(libs for sub, libs in EXTRA_CLIENTS.items() if _within(module.name, sub))
        )
        for i in module.imports:
            top = i.target.partition(".")[0]
            if top in CLIENT_LIBRARIES - extra and not (i.in_function and top in lazy):
                offenders.append(f"{_where(module, i)}: {module.name} imports {i.target}")
    assert not offenders, "\n".join(offenders)


def test_the_cli_loads_no_extra_until_used() -> None:
    """``streamfn run app.py:app`` works without the ``sam`` extra: the CLI loads the template
    machinery's libraries only for a template."""
    code = (
        "import sys, streamfn.cli; "
        "print(sorted({m.partition('.')[0] for m in sys.modules} & {'yaml', 'samtranslator'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_connectors_are_imported_as_streamfn_connectors_only() -> None:
    offenders = [
        f"{_where(module, i)}: imports {i.target}; use streamfn.connectors"
        for module in user_code().values()
        for i in module.imports
        if _within(i.target, "connectors")
    ]
    assert not offenders, "\n".join(offenders)


def test_the_graph_sees_the_connectors_and_resolves_relative_imports() -> None:
    """Guards the walk itself: a symlink not followed, or a relative import resolved wrongly,
    would make every test above pass on a graph with pieces missing."""
    modules = library()
    assert any(_within(name, CONNECTORS) and name != CONNECTORS for name in modules)
    unresolved = [
        f"{_where(module, i)}: {module.name} imports {i.target}, which is no module"
        for module in modules.values()
        for i in module.imports
        if i.relative and i.target not in modules
    ]
    assert not unresolved, "\n".join(unresolved)
    assert any(i.relative for module in modules.values() for i in module.imports)
    assert "streamfn.app" in {i.target for i in modules["streamfn"].imports}
