"""The package's shape: no import cycles, no layer importing a higher one, nothing private
imported across packages, pure layers free of torch/Hydra/MLflow.

Imports are read with :mod:`ast` (also those inside functions, and ``TYPE_CHECKING`` blocks:
a cycle there is still a design cycle), never by importing anything. ``from a import b`` is an
edge to the submodule ``a.b`` when ``b`` is one, else to ``a``. Importing ``a.b.c`` runs
``a/__init__`` too, but that implicit edge is not counted (as import-linter does): a package's
``__init__`` re-exports, it is not a dependency of its submodules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nas_plugin"

# Layers, bottom -> top. A module may import its own layer and the layers below it. The most
# specific prefix decides a module's layer (``nas_plugin.pruning.base`` before
# ``nas_plugin.pruning``). Keep README.md's "Map of the code" in step with this table.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("space", ("space", "importing")),
    (
        # Pure Python: encodings and numbers in, numbers out (no torch, Hydra or MLflow).
        "strategies/predictors",
        (
            "strategies",
            "predictors",
            "objective",
            "pareto",
            "leaderboard",
            "benchmark_table",
            "figures",
            "correlate_options",
            "testing",
            # The pruning rules decide from curves of numbers; the channel (MLflow) is higher.
            "pruning.base",
            "pruning.asha",
            "pruning.median",
            "pruning.curve",
            "pruning.config",
        ),
    ),
    (
        # torch: networks and what can be measured of an untrained one.
        "models/hardware/proxies",
        (
            "models",
            "hardware",
            "proxies",
            "supernets.nb201",
            "supernets.elastic_mbconv",
            "supernets.autodeeplab",
        ),
    ),
    (
        # Training loops (data, model build, train/eval); no MLflow.
        "tasks",
        ("tasks", "oneshot", "supernets.ofa_training", "supernets"),
    ),
    (
        # Searches over a trained supernet that log or register what they find (OFA, HAT).
        "estimators",
        ("estimators", "supernets.ofa_targets", "supernets.hat", "supernets.latency_predictor"),
    ),
    (
        # MLflow: runs, metrics, artifacts, models, resume; the job-side pruning channel and the
        # callbacks that report through it; the proxy report reads finished sweeps from MLflow.
        "tracking",
        (
            "tracking",
            "pruning",
            "pruning.channel",
            "pruning.loop",
            "pruning.hf",
            "pruning.lightning",
            "proxies.report",
        ),
    ),
    (
        # Hydra-facing: the sweeper and its collaborators, the one-shot search jobs it
        # launches, the launchers, the CLI and its benchmarks, the public package root.
        "sweeper/sweep/cli",
        ("", "sweeper", "sweep", "oneshot.job", "launchers", "cli", "bench"),
    ),
)
LAYER_NAMES = [name for name, _ in LAYERS]

# Third-party packages a layer must not import (the names of their top-level modules).
FORBIDDEN = {
    "space": {"torch", "hydra", "omegaconf", "mlflow"},
    "strategies/predictors": {"torch", "hydra", "omegaconf", "mlflow"},
    "tasks": {"mlflow"},
}

# Edges that break the rules while a rewrite is under way (none today); each must still exist
# (the test fails when one is gone, so the list only shrinks). (importer, imported module or
# third-party package).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    relative = module.removeprefix("nas_plugin").removeprefix(".")
    best, best_length = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            matches = relative == prefix or relative.startswith(prefix + ".") or prefix == ""
            length = len(prefix.split(".")) if prefix else 0
            if matches and length > best_length:
                best, best_length = name, length
    assert best is not None
    return best


def owning_module(name: str) -> str:
    """The module (or package) of ours that ``name`` lives in."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports(module: str) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in ``module``; the
    module is absolute (``nas_plugin.x`` or a third-party top-level package)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                yield target, alias.name, node.lineno


def edges(module: str) -> Iterator[tuple[str, str, str | None, int]]:
    """(kind, target, name, line): kind ``ours`` (target: one of our modules) or ``external``
    (target: a top-level package)."""
    for target, name, line in imports(module):
        if target == "nas_plugin" or target.startswith("nas_plugin."):
            submodule = f"{target}.{name}" if name else None
            if submodule in MODULES:  # ``from a import b`` with ``b`` a submodule
                yield "ours", submodule, None, line
            else:
                yield "ours", owning_module(target), name, line
        else:
            yield "external", target.partition(".")[0], name, line


GRAPH: dict[str, set[str]] = {
    module: {target for kind, target, _, _ in edges(module) if kind == "ours"} - {module}
    for module in MODULES
}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path (``a -> b -> ... -> a``) per strongly connected component (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_within(graph, component) for component in components]


def _path_within(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(component)
    parents: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & component):
                if successor == start:
                    path = [node]
                    while (parent := parents[path[-1]]) is not None:
                        path.append(parent)
                    return [*reversed(path), start]
                if successor not in parents:
                    parents[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_the_cycle_finder_reports_the_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycles() -> None:
    cycles = find_cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def upward_edges() -> set[tuple[str, str]]:
    found = set()
    for module, targets in GRAPH.items():
        rank = LAYER_NAMES.index(layer_of(module))
        for target in targets:
            if LAYER_NAMES.index(layer_of(target)) > rank:
                found.add((module, target))
    return found


def forbidden_edges() -> set[tuple[str, str]]:
    found = set()
    for module in MODULES:
        banned = FORBIDDEN.get(layer_of(module), set())
        found |= {(module, t) for kind, t, _, _ in edges(module) if kind == "external"} & {
            (module, b) for b in banned
        }
    return found


def test_no_layer_imports_a_higher_one() -> None:
    upward = upward_edges() - KNOWN_VIOLATIONS
    assert not upward, "upward imports (importer [layer] -> imported [layer]):\n" + "\n".join(
        f"{a} [{layer_of(a)}] -> {b} [{layer_of(b)}]" for a, b in sorted(upward)
    )


def test_pure_layers_import_no_torch_hydra_or_mlflow() -> None:
    found = forbidden_edges() - KNOWN_VIOLATIONS
    assert not found, "forbidden third-party imports:\n" + "\n".join(
        f"{a} [{layer_of(a)}] imports {b}" for a, b in sorted(found)
    )


def test_known_violations_are_not_stale() -> None:
    present = upward_edges() | forbidden_edges()
    stale = KNOWN_VIOLATIONS - present
    assert not stale, f"fixed, so remove from KNOWN_VIOLATIONS: {sorted(stale)}"


def package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def test_nothing_private_is_imported_across_packages() -> None:
    found = []
    for module in MODULES:
        for kind, target, name, line in edges(module):
            if kind != "ours" or package_of(module) == package_of(target):
                continue
            last = target.rpartition(".")[2]
            if (name or "").startswith("_") or (name is None and last.startswith("_")):
                found.append(f"{module}:{line} imports {target}.{name or ''}".rstrip("."))
    assert not found, "private names imported across packages:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "module, layer",
    [
        ("nas_plugin.space.nb201", "space"),
        ("nas_plugin.strategies.evolution", "strategies/predictors"),
        ("nas_plugin.pruning.asha", "strategies/predictors"),
        ("nas_plugin.pruning.channel", "tracking"),
        ("nas_plugin.supernets.nb201", "models/hardware/proxies"),
        ("nas_plugin.tasks.vision", "tasks"),
        ("nas_plugin.oneshot.job", "sweeper/sweep/cli"),
        ("nas_plugin.sweep.loop", "sweeper/sweep/cli"),
        ("nas_plugin", "sweeper/sweep/cli"),
    ],
)
def test_every_module_has_the_layer_its_prefix_says(module: str, layer: str) -> None:
    assert layer_of(module) == layer
