"""The import graph keeps its layers: a Prefect-free library, front ends on top, no arrow back up, no cycles.

Layers, lowest first: the library (``flowerkit``, itself in the layers of ``LIBRARY_LAYERS``) <
``flowerkit.tasks`` < ``flowerkit.flows`` < the front ends (``flowerkit.cli``, ``flowerkit.tui``). Every import
statement counts, including the lazy ones inside functions and those only for type checking.
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

# The library's own layers, lowest first: a module imports only from its own layer or below (docs/architecture.md).
LIBRARY_LAYERS = (
    ("foundations", ("flowerkit.errors", "flowerkit.fields", "flowerkit.columns", "flowerkit.throttle",
                     "flowerkit.optional", "flowerkit.interrupts", "flowerkit.io", "flowerkit.run.layout",
                     "flowerkit.artifacts.files", "flowerkit.artifacts.sinks")),
    ("data and models", ("flowerkit.data", "flowerkit.models", "flowerkit.device")),
    ("artifact writers", ("flowerkit.artifacts",)),
    ("the option model", ("flowerkit.run.config",)),
    ("the run plan's records", ("flowerkit.run.plan",)),
    ("the engine", ("flowerkit.engine",)),
    ("runs: preparing, claiming, listing, sweeping, benchmarking, predicting, FiftyOne", (
        "flowerkit.run", "flowerkit.sweep", "flowerkit.bench", "flowerkit.fiftyone", "flowerkit.predict")),
    ("trackers: a run's and a sweep's MLflow runs", ("flowerkit.tracking",)),
)


def layer_of(module: str) -> int:
    """The index of the most specific prefix that names ``module`` (``flowerkit.artifacts.files`` is a
    foundation although ``flowerkit.artifacts`` is not)."""
    best = (-1, -1)
    for index, (_, prefixes) in enumerate(LIBRARY_LAYERS):
        for prefix in prefixes:
            if within(module, (prefix,)) and len(prefix) > best[0]:
                best = (len(prefix), index)
    return best[1]


def project_imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports (``from pkg import submodule`` counts as the submodule only)."""
    mods = modules()
    found = set()
    for imported in imports_of(name, path):
        if imported in mods:
            found.add(imported)
        elif imported.rpartition(".")[0] in mods:
            found.add(imported.rpartition(".")[0])  # a name imported from a module
    parents = {i for i in found if any(j.startswith(i + ".") for j in found) and i != name}
    return {i for i in found - parents if i != name} | {i for i in parents if _names_from(i, name, path)}


def _names_from(package: str, name: str, path: Path) -> bool:
    """Whether ``name`` imports a name (not only submodules) from ``package``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    mods = modules()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == package:
            if any(f"{package}.{alias.name}" not in mods for alias in node.names):
                return True
    return False


@pytest.mark.parametrize("module", LIBRARY)
def test_every_library_module_has_a_layer(module: str) -> None:
    if module.count(".") == 0 or modules()[module].name == "__init__.py" and not modules()[module].read_text().strip():
        return
    assert layer_of(module) >= 0, f"{module} is in none of LIBRARY_LAYERS: give it one"


@pytest.mark.parametrize("module", LIBRARY)
def test_no_library_module_imports_a_layer_above_it(module: str) -> None:
    here = layer_of(module)
    upward = sorted(f"{i} ({LIBRARY_LAYERS[layer_of(i)][0]})" for i in project_imports(module, modules()[module])
                    if i in LIBRARY and layer_of(i) > here)
    assert not upward, f"{module} ({LIBRARY_LAYERS[here][0]}) imports from above: {upward}"


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
    """Imports of project modules, lazy ones included, form no cycle."""
    mods = modules()
    graph = {m: project_imports(m, p) & set(mods) for m, p in mods.items()}
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
