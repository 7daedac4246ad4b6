"""Run strategies in process against a benchmark table and compare them with Optuna's TPE.

For every seed, a strategy is built over the NAS-Bench-201 cell space and driven by a plain
``ask -> look the candidate up in the table -> tell`` loop; the harness records the best metric
found after each query and the time spent inside ``ask``. Strategies get the options of their
shipped config group (``conf/plugin/hydra/sweeper/strategy/<name>.yaml``), so the benchmark
measures what a user of the sweeper gets; options given here override them.

``tpe`` is Optuna's ``TPESampler`` as a user of Optuna's Hydra sweeper gets it: one categorical
per edge, default settings, the ``Study`` ask/tell interface. Optuna may propose a cell it has
already seen; that still costs a query, as it would in a sweep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from nas_plugin import config_dir
from nas_plugin.benchmark_table import BenchmarkTable
from nas_plugin.space import Encoding, nb201
from nas_plugin.strategies import STRATEGIES, make_strategy

DEFAULT_CHECKPOINTS: tuple[int, ...] = (25, 50, 100, 150, 300)
DEFAULT_STRATEGIES: tuple[str, ...] = ("random", "evolution", "local_search", "bo", "tpe")
TPE = "tpe"


class BenchError(ValueError):
    """An unusable benchmark request: unknown strategy, bad option, bad checkpoint."""


@dataclass
class Trace:
    """One strategy's runs: the best metric after each query, one row per seed."""

    strategy: str
    options: dict[str, Any]
    best: np.ndarray  # (seeds, queries); NaN until the first successful query
    ask_seconds: float = 0.0
    asks: int = 0

    @property
    def ms_per_ask(self) -> float:
        return 1000.0 * self.ask_seconds / max(self.asks, 1)

    def at(self, queries: int) -> tuple[float, float]:
        """Mean and standard deviation over seeds of the best metric after ``queries`` queries."""
        column = self.best[:, queries - 1]
        return float(np.mean(column)), float(np.std(column))


@dataclass
class BenchmarkResult:
    table: str
    metric: str
    maximize: bool
    optimum: float
    optimum_arch: str
    seeds: int
    queries: int
    checkpoints: tuple[int, ...]
    traces: list[Trace] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-friendly dict per strategy."""
        rows = []
        for trace in self.traces:
            best = {}
            for n in self.checkpoints:
                mean, std = trace.at(n)
                best[str(n)] = {"mean": mean, "std": std}
            rows.append(
                {
                    "strategy": trace.strategy,
                    "options": trace.options,
                    "best": best,
                    "ms_per_ask": trace.ms_per_ask,
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "metric": self.metric,
            "maximize": self.maximize,
            "optimum": self.optimum,
            "optimum_arch": self.optimum_arch,
            "seeds": self.seeds,
            "queries": self.queries,
            "rows": self.rows(),
        }

    def markdown(self, digits: int = 2) -> str:
        header = ["strategy", *(f"@{n}" for n in self.checkpoints), "ms/ask"]
        lines = [_md_row(header), _md_row(["---"] * len(header))]
        for trace in self.traces:
            cells = [trace.strategy]
            for n in self.checkpoints:
                mean, std = trace.at(n)
                cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
            cells.append(f"{trace.ms_per_ask:.3f}")
            lines.append(_md_row(cells))
        return "\n".join(lines)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def default_options(strategy: str) -> dict[str, Any]:
    """The options of the strategy's shipped config group (without ``name``); ``{}`` if none."""
    path = config_dir() / "plugin" / "hydra" / "sweeper" / "strategy" / f"{strategy}.yaml"
    if not path.is_file():
        return {}
    options = yaml.safe_load(path.read_text()) or {}
    options.pop("name", None)
    return options


def resolve_checkpoints(checkpoints: Sequence[int], queries: int) -> tuple[int, ...]:
    """Checkpoints within the budget, ending with the budget itself."""
    if queries < 1:
        raise BenchError(f"queries={queries} must be a positive integer")
    bad = [n for n in checkpoints if n < 1]
    if bad:
        raise BenchError(f"checkpoints {bad} must be positive query counts")
    kept = sorted({n for n in checkpoints if n <= queries} | {queries})
    return tuple(kept)


def table_objective(
    table: BenchmarkTable, metric: str, prefix: str = nb201.DEFAULT_PREFIX
) -> Callable[[Encoding], float | None]:
    """Encoding -> metric value from the table (``None`` for a missing value: a failed trial)."""
    table.check_columns(metric)
    space = nb201.search_space(prefix)
    cache: dict[Encoding, float | None] = {}

    def objective(encoding: Encoding) -> float | None:
        if encoding not in cache:
            arch = nb201.arch_str_from_values(space.decode(encoding), prefix)
            value = table.lookup(arch)[metric]
            cache[encoding] = value if math.isfinite(value) else None
        return cache[encoding]

    return objective


def _check_single_objective(name: str) -> None:
    if name != TPE and name not in STRATEGIES:
        raise BenchError(f"strategy {name!r} is unknown; allowed: {sorted([*STRATEGIES, TPE])}")
    if name != TPE and STRATEGIES[name].multi_objective:
        raise BenchError(
            f"strategy {name!r} is multi-objective: benchmark it against a metric and a cost "
            "(nas-plugin bench --cost COLUMN)"
        )


def run_strategy(
    name: str,
    objective: Callable[[Encoding], float | None],
    seeds: int,
    queries: int,
    options: Mapping[str, Any] | None = None,
    maximize: bool = True,
) -> Trace:
    """Drive one of our strategies for ``queries`` queries per seed."""
    _check_single_objective(name)
    merged = {**default_options(name), **(options or {})}
    sign = 1.0 if maximize else -1.0
    best = np.full((seeds, queries), np.nan)
    ask_seconds, asks = 0.0, 0
    space = nb201.search_space()
    for seed in range(seeds):
        strategy = make_strategy({"name": name, **merged}, space, seed)
        incumbent = -math.inf
        for query in range(queries):
            start = time.perf_counter()
            candidate = strategy.ask()
            ask_seconds += time.perf_counter() - start
            asks += 1
            if candidate is None:  # the space is exhausted: the best stays where it is
                best[seed, query:] = best[seed, query - 1] if query else np.nan
                break
            value = objective(candidate)
            strategy.tell(candidate, None if value is None else sign * value)
            if value is not None:
                incumbent = max(incumbent, sign * value)
            best[seed, query] = sign * incumbent if math.isfinite(incumbent) else np.nan
    return Trace(name, merged, best, ask_seconds, asks)


def run_tpe(
    objective: Callable[[Encoding], float | None],
    seeds: int,
    queries: int,
    options: Mapping[str, Any] | None = None,
    maximize: bool = True,
) -> Trace:
    """Optuna's TPE (default settings unless ``options`` name ``TPESampler`` arguments)."""
    import optuna  # the optional 'bench' extra

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = nb201.search_space()
    keys = [param.name for param in space.params]
    choices = {param.name: list(param.values()) for param in space.params}
    sign = 1.0 if maximize else -1.0
    best = np.full((seeds, queries), np.nan)
    ask_seconds, asks = 0.0, 0
    for seed in range(seeds):
        sampler = optuna.samplers.TPESampler(seed=seed, **(options or {}))
        study = optuna.create_study(
            direction="maximize" if maximize else "minimize", sampler=sampler
        )
        incumbent = -math.inf
        for query in range(queries):
            start = time.perf_counter()
            trial = study.ask()
            values = {key: trial.suggest_categorical(key, choices[key]) for key in keys}
            ask_seconds += time.perf_counter() - start
            asks += 1
            value = objective(space.encode(values))
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, value)
                incumbent = max(incumbent, sign * value)
            best[seed, query] = sign * incumbent if math.isfinite(incumbent) else np.nan
    return Trace(TPE, dict(options or {}), best, ask_seconds, asks)


def run_benchmark(
    table: str | BenchmarkTable = "nb201_cifar10",
    metric: str = "cifar10_test_acc",
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    checkpoints: Sequence[int] = DEFAULT_CHECKPOINTS,
    seeds: int = 30,
    queries: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    maximize: bool = True,
    progress: Callable[[Trace], None] | None = None,
) -> BenchmarkResult:
    """Run every strategy (``tpe`` included) for ``seeds`` seeds on one table.

    ``queries`` defaults to the last checkpoint; ``options`` maps a strategy name to its option
    overrides; ``progress`` is called with each strategy's trace as soon as it is done.
    """
    if seeds < 1:
        raise BenchError(f"seeds={seeds} must be a positive integer")
    queries = max(checkpoints, default=300) if queries is None else queries
    checkpoints = resolve_checkpoints(checkpoints, queries)
    for strategy in strategies:
        _check_single_objective(strategy)
    name = table if isinstance(table, str) else "<table>"
    loaded = BenchmarkTable.load(table) if isinstance(table, str) else table
    objective = table_objective(loaded, metric)
    optimum_arch, optimum = loaded.best(metric, maximize)
    result = BenchmarkResult(
        name, metric, maximize, optimum, optimum_arch, seeds, queries, checkpoints
    )
    options = options or {}
    for strategy in strategies:
        if strategy == TPE:
            trace = run_tpe(objective, seeds, queries, options.get(TPE), maximize)
        else:
            trace = run_strategy(
                strategy, objective, seeds, queries, options.get(strategy), maximize
            )
        result.traces.append(trace)
        if progress is not None:
            progress(trace)
    return result
