"""The project's import structure: no cycles between modules (imports inside functions count too), and each
package imports only the packages below it (README "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

PACKAGES = ("contracts", "spark_jobs", "models", "feature_repo", "loaders", "online")
# What each package may import besides itself: data flows one way, raw files -> ... -> online.
MAY_IMPORT: dict[str, set[str]] = {
    "contracts": set(),
    "spark_jobs": {"contracts"},
    "feature_repo": {"contracts"},
    "models": {"contracts", "spark_jobs"},
    "loaders": {"contracts", "models"},
    "online": {"contracts", "spark_jobs", "models", "feature_repo", "loaders"},
}


def project_modules(root: Path = REPO_ROOT) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, wherever the import statement is (top level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from models import train" imports the module models.train; "from models.x import f" imports models.x
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph(root: Path = REPO_ROOT) -> dict[str, set[str]]:
    modules = project_modules(root)
    known = set(modules)
    # A package's __init__ is imported by every import of one of its modules; it imports nothing here.
    return {name: imports_of(path, known) - {name} - set(PACKAGES) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each a cycle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_project_modules():
    graph = import_graph()
    assert len(graph) > 60  # every module was read
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "models" / "a.py").write_text("from models.b import f\n")
    (tmp_path / "models" / "b.py").write_text("def f():\n    from models import a\n")
    (tmp_path / "models" / "c.py").write_text("import models.a\n")
    assert cycles(import_graph(tmp_path)) == [["models.a", "models.b"]]


def test_each_package_imports_only_the_packages_below_it():
    crossing = sorted(f"{module} imports {target}" for module, targets in import_graph().items()
                      for target in targets
                      if (mine := module.split(".")[0]) != (theirs := target.split(".")[0])
                      and theirs not in MAY_IMPORT[mine])
    assert crossing == []
