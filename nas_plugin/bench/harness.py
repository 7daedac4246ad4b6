"""Run strategies in process against a benchmark table and compare them with Optuna's TPE.

For every seed, a strategy is built over the NAS-Bench-201 cell space and driven by a plain
``ask -> look the candidate up in the table -> tell`` loop; the harness records the best metric
found after each query and the time spent inside ``ask``. Strategies get the options of their
shipped config group (``conf/plugin/hydra/sweeper/strategy/<name>.yaml``), so the benchmark
measures what a user of the sweeper gets; options given here override them.

``tpe`` is Optuna's ``TPESampler`` as a user of Optuna's Hydra sweeper gets it: one categorical
per edge, default settings, the ``Study`` ask/tell interface. Optuna may propose a cell it has
already seen; that still costs a query, as it would in a sweep.

Protocol: a strategy searches on ``metric`` and the harness reports ``report`` (default: the same
column) of the best candidate *by the search metric* so far, as papers do when they search on a
validation column and report the test column of the architecture found.

Rows: a strategy name, or a variant ``name[option=value,...]`` with its own options, so several
settings of one strategy run side by side. Two options belong to the harness, not the strategy:
``warmup_pool`` and ``warmup_keep`` (a zero-cost warm-up, Abdelfattah et al., 2021: rank
``warmup_pool`` random cells by the ``proxy`` column and query the top ``warmup_keep`` first;
the strategy is told their results and goes on from there).
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.stats import rankdata

from nas_plugin import config_dir
from nas_plugin.benchmark_table import DATA_DIR, BenchmarkTable, TableError
from nas_plugin.space import Encoding, nb201
from nas_plugin.strategies import STRATEGIES, make_strategy
from nas_plugin.strategies.warm import WarmStarted

DEFAULT_CHECKPOINTS: tuple[int, ...] = (25, 50, 100, 150, 300)
DEFAULT_STRATEGIES: tuple[str, ...] = ("random", "evolution", "local_search", "bo", "tpe")
TPE = "tpe"
# Options of a row that the harness consumes itself (the zero-cost warm-up).
WARMUP_OPTIONS = ("warmup_pool", "warmup_keep")
# The packaged zero-cost scores of every NB201 cell (nas_plugin/bench/zero_cost_table.py).
ZERO_COST_TABLE = str(DATA_DIR / "nb201_zero_cost.csv.gz")


class BenchError(ValueError):
    """An unusable benchmark request: unknown strategy, bad option, bad checkpoint."""


@dataclass
class Trace:
    """One row's runs: the reported metric of the incumbent after each query, one row per seed."""

    strategy: str
    options: dict[str, Any]
    best: np.ndarray  # (seeds, queries); NaN until the first successful query
    ask_seconds: float = 0.0
    asks: int = 0
    maximize: bool = True

    @property
    def ms_per_ask(self) -> float:
        return 1000.0 * self.ask_seconds / max(self.asks, 1)

    def at(self, queries: int) -> tuple[float, float]:
        """Mean and standard deviation over seeds of the best metric after ``queries`` queries."""
        column = self.best[:, queries - 1]
        return float(np.mean(column)), float(np.std(column))

    def robust_at(self, queries: int) -> tuple[float, float]:
        """Median over seeds, and the value 90 % of the seeds reach or beat ("p10": the 10th
        percentile when higher is better, the 90th when lower is)."""
        column = self.best[:, queries - 1]
        tail = np.percentile(column, 10 if self.maximize else 90)
        return float(np.median(column)), float(tail)


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
    report: str | None = None  # the reported column, when it is not the search metric

    @property
    def reported(self) -> str:
        return self.report or self.metric

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-friendly dict per row."""
        rows = []
        for trace in self.traces:
            best = {}
            for n in self.checkpoints:
                mean, std = trace.at(n)
                median, p10 = trace.robust_at(n)
                best[str(n)] = {"mean": mean, "std": std, "median": median, "p10": p10}
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
            "report": self.reported,
            "maximize": self.maximize,
            "optimum": self.optimum,
            "optimum_arch": self.optimum_arch,
            "seeds": self.seeds,
            "queries": self.queries,
            "rows": self.rows(),
        }

    def markdown(self, digits: int = 2) -> str:
        """One row per strategy; each checkpoint's cell is ``mean ± std · median · p10``."""
        header = ["strategy", *(f"@{n}" for n in self.checkpoints), "ms/ask"]
        lines = [_md_row(header), _md_row(["---"] * len(header))]
        for trace in self.traces:
            cells = [trace.strategy]
            for n in self.checkpoints:
                mean, std = trace.at(n)
                median, p10 = trace.robust_at(n)
                cells.append(
                    f"{mean:.{digits}f} ± {std:.{digits}f} · {median:.{digits}f} · {p10:.{digits}f}"
                )
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


_VARIANT = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(?:\[(.*)\])?\s*$")


def parse_row(text: str) -> tuple[str, dict[str, Any]]:
    """``"bo[features=path,acquisition=its]"`` -> ``("bo", {"features": "path", ...})``."""
    match = _VARIANT.match(text)
    if match is None:
        raise BenchError(
            f"strategy {text!r} must be a name or name[option=value,...], e.g. "
            "bo[features=path,acquisition=its]"
        )
    name, inner = match.group(1), match.group(2)
    options: dict[str, Any] = {}
    for item in (inner or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"strategy {text!r}: {item!r} must look like option=value")
        options[key.strip()] = yaml.safe_load(value)
    return name, options


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
    """Encoding -> metric value from the table; ``None`` (a failed trial) for a missing value
    or a cell the table lacks, as the sweeper's tabular estimator fails such a trial."""
    table.check_columns(metric)
    space = nb201.search_space(prefix)
    cache: dict[Encoding, float | None] = {}

    def objective(encoding: Encoding) -> float | None:
        if encoding not in cache:
            arch = nb201.arch_str_from_values(space.decode(encoding), prefix)
            row = table.rows.get(arch)
            value = math.nan if row is None else row[metric]
            cache[encoding] = value if math.isfinite(value) else None
        return cache[encoding]

    return objective


def proxy_scores(table: BenchmarkTable, proxy: str) -> Callable[[Encoding], float]:
    """Encoding -> zero-cost score (higher = predicted better; NaN ranks last).

    ``proxy`` is a column of ``table`` or of the packaged zero-cost table of NB201 cells, or
    several comma-separated ones: their scores are then combined as the mean of their ranks
    (the ensemble of Abdelfattah et al., 2021), computed over the whole table.
    """
    names = [name.strip() for name in proxy.split(",") if name.strip()]
    if not names:
        raise BenchError(f"--proxy {proxy!r} names no column")
    companion: BenchmarkTable | None = None
    columns: list[dict[str, float]] = []
    for name in names:
        if name in table.columns:
            source = table
        else:
            if companion is None and Path(ZERO_COST_TABLE).is_file():
                companion = BenchmarkTable.load(ZERO_COST_TABLE)
            if companion is None or name not in companion.columns:
                packaged = list(companion.columns) if companion else "not installed"
                raise BenchError(
                    f"--proxy column {name!r} is not in the table ({list(table.columns)}) "
                    f"nor in the packaged zero-cost table ({packaged})"
                )
            source = companion
        columns.append({key: row[name] for key, row in source.rows.items()})
    keys = sorted(set.intersection(*(set(c) for c in columns)))
    combined = np.zeros(len(keys))
    for column in columns:
        values = np.array([column[k] for k in keys])
        values = np.where(np.isfinite(values), values, -np.inf)  # unscorable ranks last
        combined += rankdata(values) / len(keys)
    by_key = dict(zip(keys, combined.tolist(), strict=True))
    space = nb201.search_space()

    def score(encoding: Encoding) -> float:
        return by_key.get(nb201.arch_str_from_values(space.decode(encoding)), -math.inf)

    return score


def warmup_candidates(
    proxy: Callable[[Encoding], float], seed: int, pool: int, keep: int
) -> list[Encoding]:
    """The ``keep`` best of ``pool`` distinct random cells by ``proxy`` (seeded, so a seed gives
    one list)."""
    space = nb201.search_space()
    rng = random.Random(f"warmup-{seed}")
    drawn: dict[Encoding, None] = {}
    for _ in range(100 * pool):
        if len(drawn) >= min(pool, space.size()):
            break
        drawn[space.sample(rng)] = None
    ranked = sorted(drawn, key=proxy, reverse=True)  # stable: ties keep the draw order
    return ranked[:keep]


def _check_single_objective(name: str) -> None:
    if name != TPE and name not in STRATEGIES:
        raise BenchError(f"strategy {name!r} is unknown; allowed: {sorted([*STRATEGIES, TPE])}")
    if name != TPE and STRATEGIES[name].multi_objective:
        raise BenchError(
            f"strategy {name!r} is multi-objective: benchmark it against a metric and a cost "
            "(nas-plugin bench --cost COLUMN)"
        )


def _warmup_settings(label: str, options: dict[str, Any]) -> tuple[int, int]:
    pool = options.pop("warmup_pool", 0)
    keep = options.pop("warmup_keep", min(10, pool) if isinstance(pool, int) else 0)
    for key, value in (("warmup_pool", pool), ("warmup_keep", keep)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BenchError(f"{label}: {key}={value!r} must be an integer >= 0")
    if keep > pool:
        raise BenchError(f"{label}: warmup_keep={keep} > warmup_pool={pool}")
    return pool, keep


def run_strategy(
    name: str,
    objective: Callable[[Encoding], float | None],
    seeds: int,
    queries: int,
    options: Mapping[str, Any] | None = None,
    maximize: bool = True,
    report: Callable[[Encoding], float | None] | None = None,
    proxy: Callable[[Encoding], float] | None = None,
    label: str | None = None,
) -> Trace:
    """Drive one of our strategies for ``queries`` queries per seed.

    The trace holds ``report`` (default: ``objective``) of the best candidate by ``objective``
    so far. ``options`` may hold the warm-up's ``warmup_pool`` / ``warmup_keep`` (``proxy``
    ranks the pool).
    """
    _check_single_objective(name)
    label = label or name
    merged = {**default_options(name), **(options or {})}
    strategy_options = dict(merged)
    pool, keep = _warmup_settings(label, strategy_options)
    if pool and proxy is None:
        raise BenchError(f"{label}: warmup_pool needs a zero-cost proxy column (--proxy COL)")
    report = report or objective
    sign = 1.0 if maximize else -1.0
    best = np.full((seeds, queries), np.nan)
    ask_seconds, asks = 0.0, 0
    space = nb201.search_space()
    for seed in range(seeds):
        strategy = make_strategy({"name": name, **strategy_options}, space, seed)
        if keep:
            first = warmup_candidates(proxy, seed, pool, keep)
            strategy = WarmStarted(strategy, first=first)
        incumbent, incumbent_value = None, -math.inf
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
            if value is not None and sign * value > incumbent_value:
                incumbent, incumbent_value = candidate, sign * value
            best[seed, query] = _reported(report, incumbent)
    return Trace(label, merged, best, ask_seconds, asks, maximize)


def _reported(report: Callable[[Encoding], float | None], incumbent: Encoding | None) -> float:
    value = None if incumbent is None else report(incumbent)
    return np.nan if value is None else value


def run_tpe(
    objective: Callable[[Encoding], float | None],
    seeds: int,
    queries: int,
    options: Mapping[str, Any] | None = None,
    maximize: bool = True,
    report: Callable[[Encoding], float | None] | None = None,
    label: str = TPE,
) -> Trace:
    """Optuna's TPE (default settings unless ``options`` name ``TPESampler`` arguments)."""
    import optuna  # the optional 'bench' extra

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = nb201.search_space()
    keys = [param.name for param in space.params]
    choices = {param.name: list(param.values()) for param in space.params}
    report = report or objective
    sign = 1.0 if maximize else -1.0
    best = np.full((seeds, queries), np.nan)
    ask_seconds, asks = 0.0, 0
    for seed in range(seeds):
        sampler = optuna.samplers.TPESampler(seed=seed, **(options or {}))
        study = optuna.create_study(
            direction="maximize" if maximize else "minimize", sampler=sampler
        )
        incumbent, incumbent_value = None, -math.inf
        for query in range(queries):
            start = time.perf_counter()
            trial = study.ask()
            values = {key: trial.suggest_categorical(key, choices[key]) for key in keys}
            ask_seconds += time.perf_counter() - start
            asks += 1
            encoding = space.encode(values)
            value = objective(encoding)
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, value)
                if sign * value > incumbent_value:
                    incumbent, incumbent_value = encoding, sign * value
            best[seed, query] = _reported(report, incumbent)
    return Trace(label, dict(options or {}), best, ask_seconds, asks, maximize)


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
    report: str | None = None,
    proxy: str | None = None,
) -> BenchmarkResult:
    """Run every row (``tpe`` included) for ``seeds`` seeds on one table.

    A row is a strategy name or ``name[option=value,...]`` (:func:`parse_row`). ``queries``
    defaults to the last checkpoint; ``options`` maps a strategy name to option overrides for
    every row of that strategy (a row's own options win); ``report`` is the column reported
    (default: ``metric``); ``proxy`` the zero-cost column(s) the rows' warm-up ranks by;
    ``progress`` is called with each row's trace as soon as it is done.
    """
    if seeds < 1:
        raise BenchError(f"seeds={seeds} must be a positive integer")
    queries = max(checkpoints, default=300) if queries is None else queries
    checkpoints = resolve_checkpoints(checkpoints, queries)
    rows = [(label, *parse_row(label)) for label in strategies]
    for _, strategy, _ in rows:
        _check_single_objective(strategy)
    name = table if isinstance(table, str) else "<table>"
    loaded = BenchmarkTable.load(table) if isinstance(table, str) else table
    objective = table_objective(loaded, metric)
    reporter = None if report in (None, metric) else table_objective(loaded, report)
    optimum_arch, optimum = loaded.best(report or metric, maximize)
    try:
        scores = proxy_scores(loaded, proxy) if proxy else None
    except TableError as err:
        raise BenchError(f"--proxy {proxy!r}: {err}") from None
    result = BenchmarkResult(
        name,
        metric,
        maximize,
        optimum,
        optimum_arch,
        seeds,
        queries,
        checkpoints,
        report=None if reporter is None else report,
    )
    options = options or {}
    for label, strategy, own in rows:  # every row's options checked before any query
        if strategy != TPE:
            given = {**default_options(strategy), **options.get(strategy, {}), **own}
            pool, _ = _warmup_settings(label, given)
            if pool and scores is None:
                raise BenchError(f"{label}: warmup_pool needs a zero-cost proxy column (--proxy)")
            make_strategy({"name": strategy, **given}, nb201.search_space(), 0)
    for label, strategy, own in rows:
        given = {**options.get(strategy, {}), **own}
        if strategy == TPE:
            trace = run_tpe(objective, seeds, queries, given, maximize, reporter, label)
        else:
            trace = run_strategy(
                strategy, objective, seeds, queries, given, maximize, reporter, scores, label
            )
        result.traces.append(trace)
        if progress is not None:
            progress(trace)
    return result
