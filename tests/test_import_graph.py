"""The lab's imports run one way: core -> db -> engine -> findings -> lab_app, with no circles.

Read from the source with ``ast`` (nothing is imported), counting every import: at module level,
inside functions, and under ``if TYPE_CHECKING:``. A function-local import is still a dependency;
it only moves the cost to the first call, so it cannot hide an arrow that runs back up or a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ["core", "db", "engine", "findings", "lab_app"]  # each may import only those before it
RANK = {name: i for i, name in enumerate(LAYERS)}
# The one rule each layer states in the issue, in the words of the failure message.
FORBIDDEN = {
    "core": {"db", "engine", "findings", "lab_app"},
    "db": {"engine", "findings", "lab_app"},
    "engine": {"findings", "lab_app"},
    "findings": {"lab_app"},
}


def project_modules() -> dict[str, Path]:
    """Module name -> file, for every module of the five packages."""
    out = {}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = project_modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lives in (``engine.runs.RunSpec`` -> ``engine.runs``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """Every project module ``module`` imports, anywhere in its file."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join(here + ([base] if base else []))
            # `from pkg import name` imports pkg, and pkg.name when that is a module.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target and target != module:
                found.add(target)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_package_is_found():
    assert {m.split(".")[0] for m in MODULES} == set(LAYERS)
    assert {"core.errors", "core.lab", "db.connection", "engine.cli", "findings.store", "lab_app.data"} <= set(MODULES)


def test_imports_run_one_way():
    """No module imports a layer above its own: db and core never import the engine, the findings
    or the app; the engine never imports the findings or the app; the findings never the app.

    A package's ``__main__`` is a program, not a module: nothing imports it, so it may start the
    layers above it (``python -m engine`` adds the findings commands in engine/__main__.py)."""
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.rpartition(".")[2] != "__main__"
        for target in targets
        if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], set())
    )
    assert upward == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_two_modules_import_each_other_directly_or_in_a_circle():
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_cycle_finder_finds_circles(graph, expected):
    """The checker itself: a direct pair and a longer circle are found, a chain is not."""
    assert _cycles(graph) == expected


def test_the_import_reader_sees_function_local_and_relative_imports(tmp_path, monkeypatch):
    """An import inside a function, and a relative one, count as much as one at the top."""
    pkg = tmp_path / "engine"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from findings.cli import main\n    from . import b\n")
    (pkg / "b.py").write_text("")
    fake = {"engine": pkg / "__init__.py", "engine.a": pkg / "a.py", "engine.b": pkg / "b.py",
            "findings.cli": tmp_path / "cli.py"}
    monkeypatch.setitem(globals(), "MODULES", fake)
    assert imports_of("engine.a") == {"findings.cli", "engine", "engine.b"}


def _function_local_imports(path: Path) -> list[ast.stmt]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    out.append(node)
    return out


def _is_deferred(lines: list[str], node: ast.stmt) -> bool:
    """``# deferred: why`` on the import's line, or on the comment line above its run of imports."""
    if "# deferred:" in lines[node.lineno - 1]:
        return True
    i = node.lineno - 2
    while i >= 0 and lines[i].lstrip().startswith(("import ", "from ")):
        i -= 1
    return i >= 0 and lines[i].lstrip().startswith("# deferred:")


def test_function_local_imports_say_what_heavy_import_they_defer():
    """An import inside a function is there only to put off a heavy import (torch, transformers,
    scikit-learn, scipy, streamlit...) and says so: ``# deferred: <what and why>``."""
    unmarked = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        unmarked += [f"{module}:{node.lineno}" for node in _function_local_imports(path) if not _is_deferred(lines, node)]
    assert unmarked == []
