"""The import graph keeps its layers: a Prefect-free library, front ends on top, and no cycles.

Layers, lowest first: the library (``flowerkit``: config, data, models, engine, artifacts, runs, plan) <
``flowerkit.tasks`` < ``flowerkit.flows`` < the front ends (``flowerkit.cli``, ``flowerkit.tui``). Every import
statement counts, including the lazy ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where each installed package's source lives in the repository (pyproject's package-dir mapping).
SOURCES = {"flowerkit": REPO / "flowerkit", "flowerkit.tasks": REPO / "tasks", "flowerkit.flows": REPO / "flows",
           "flowerkit.tui": REPO / "tui"}
FRONT_ENDS = ("flowerkit.cli", "flowerkit.tui", "flowerkit.__main__")
ORCHESTRATION = ("flowerkit.tasks", "flowerkit.flows")
APP_FRAMEWORKS = ("prefect", "typer", "textual")


def modules() -> dict[str, Path]:
    found = {}
    for package, root in SOURCES.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def imports_of(name: str, path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return found


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


LIBRARY = sorted(m for m in modules() if not within(m, FRONT_ENDS + ORCHESTRATION))


@pytest.mark.parametrize("module", LIBRARY)
def test_the_library_imports_no_app_framework_and_nothing_above_it(module: str) -> None:
    bad = sorted(i for i in imports_of(module, modules()[module])
                 if within(i, APP_FRAMEWORKS) or within(i, FRONT_ENDS + ORCHESTRATION))
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", sorted(m for m in modules() if within(m, ORCHESTRATION)))
def test_tasks_and_flows_import_no_front_end(module: str) -> None:
    bad = sorted(i for i in imports_of(module, modules()[module]) if within(i, FRONT_ENDS + ("typer", "textual")))
    assert not bad, f"{module} imports {bad}"


def test_the_dashboard_does_not_import_the_cli() -> None:
    bad = {m: i for m in modules() if within(m, ("flowerkit.tui",))
           for i in imports_of(m, modules()[m]) if within(i, ("flowerkit.cli",))}
    assert not bad


def test_no_import_cycles_between_modules() -> None:
    """Module-level imports of project modules form no cycle (lazy imports inside functions may point up)."""
    mods = modules()
    graph = {m: {i for i in imports_of(m, p, top_level_only=True) if i in mods and i != m} for m, p in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
