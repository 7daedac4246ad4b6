"""Multi-objective benchmark on NAS-Bench-201: how much of the true Pareto front a search finds.

Each strategy searches the NB201 cell space for ``budget`` look-ups in the table, for several
seeds. A multi-objective strategy is told ``(metric, -cost)`` (higher is better on both). A
single-objective strategy is told MnasNet's soft-constrained reward (Tan et al., 2019)
``metric * (cost / target) ** w`` with ``target`` the table's median cost and ``w = -0.07``: one
number that trades a little metric for a lot of cost.

Quality is the hypervolume of the front of what was found, as a fraction of the hypervolume of
the true front of the whole table, both against the reference point (worst metric, worst cost)
of the whole table. In process: no Hydra, no MLflow.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence

import numpy as np

from nas_plugin.benchmark_table import BenchmarkTable
from nas_plugin.pareto import hypervolume, pareto_front
from nas_plugin.space import nb201
from nas_plugin.strategies import STRATEGIES, StrategyError, make_strategy

# MnasNet's exponent for a soft latency target (Tan et al., 2019, section 3).
MNAS_WEIGHT = -0.07


def mnas_reward(metric: float, cost: float, target: float, weight: float = MNAS_WEIGHT) -> float:
    """MnasNet's scalarised reward ``metric * (cost / target) ** weight`` (metric > 0)."""
    return metric * (cost / target) ** weight


def run_pareto_benchmark(
    table: BenchmarkTable | str,
    metric: str,
    cost: str,
    strategies: Sequence[str],
    checkpoints: Sequence[int],
    seeds: int,
) -> list[dict]:
    """Hypervolume fractions of each strategy after each checkpoint, over ``seeds`` seeds.

    ``strategies`` are rows as ``nas-plugin bench`` takes them (``name`` or
    ``name[option=value,...]``), built with the options of their shipped config group.
    ``table`` is a loaded table or a table name (``nb201_cifar10``); ``metric`` is maximised and
    ``cost`` minimised. Returns one row per strategy and checkpoint: ``{"strategy", "queries",
    "hv_fraction_mean", "hv_fraction_std" (sample std over seeds), "ms_per_ask" (mean time of
    one ``ask`` up to that checkpoint), "seeds"}``. Seeds are ``0 .. seeds - 1``.
    """
    if isinstance(table, str):
        table = BenchmarkTable.load(table)
    table.check_columns(metric, cost)
    from nas_plugin.bench.harness import parse_row

    unknown = [name for name in strategies if parse_row(name)[0] not in STRATEGIES]
    if unknown:
        raise StrategyError(f"unknown strategy {unknown}; allowed: {sorted(STRATEGIES)}")
    if not checkpoints or any(
        isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in checkpoints
    ):
        raise ValueError(f"checkpoints={list(checkpoints)!r} must be positive integers")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r} must be a positive integer")

    values = np.array([[row[metric], row[cost]] for row in table.rows.values()])
    values = values[np.all(np.isfinite(values), axis=1)]
    # Maximise both axes: (metric, -cost); the reference is the table's worst of each.
    points = values * np.array([1.0, -1.0])
    reference = points.min(axis=0)
    true_hv = hypervolume(points[pareto_front(points)], reference)
    target = float(np.median(values[:, 1]))

    rows = []
    for name in strategies:
        fractions: dict[int, list[float]] = {c: [] for c in checkpoints}
        ms_per_ask: dict[int, list[float]] = {c: [] for c in checkpoints}
        for seed in range(seeds):
            for checkpoint, fraction, ms in _one_run(
                table, name, seed, metric, cost, sorted(set(checkpoints)), reference, target
            ):
                fractions[checkpoint].append(fraction / true_hv)
                ms_per_ask[checkpoint].append(ms)
        for checkpoint in sorted(set(checkpoints)):
            found = fractions[checkpoint]
            rows.append(
                {
                    "strategy": name,
                    "queries": checkpoint,
                    "hv_fraction_mean": statistics.fmean(found),
                    "hv_fraction_std": statistics.stdev(found) if len(found) > 1 else 0.0,
                    "ms_per_ask": statistics.fmean(ms_per_ask[checkpoint]),
                    "seeds": seeds,
                }
            )
    return rows


def _one_run(
    table: BenchmarkTable,
    name: str,
    seed: int,
    metric: str,
    cost: str,
    checkpoints: list[int],
    reference: np.ndarray,
    target: float,
) -> list[tuple[int, float, float]]:
    """``(checkpoint, hypervolume found, ms per ask)`` of one seeded search."""
    from nas_plugin.bench.harness import default_options, parse_row

    space = nb201.search_space()
    strategy_name, options = parse_row(name)  # a row: name or name[option=value,...]
    config = {"name": strategy_name, **default_options(strategy_name), **options}
    strategy = make_strategy(config, space, seed)
    found: list[tuple[float, float]] = []
    ask_seconds = 0.0
    queries = 0
    exhausted = False
    results = []
    for checkpoint in checkpoints:
        while queries < checkpoint and not exhausted:
            start = time.perf_counter()
            candidate = strategy.ask()
            ask_seconds += time.perf_counter() - start
            if candidate is None:
                exhausted = True
                break
            queries += 1
            row = table.lookup(nb201.arch_str_from_values(space.decode(candidate)))
            value, spent = row[metric], row[cost]
            if not (math.isfinite(value) and math.isfinite(spent)):
                strategy.tell(candidate, None)
                continue
            found.append((value, -spent))
            if strategy.multi_objective:
                strategy.tell(candidate, (value, -spent))
            else:
                strategy.tell(candidate, mnas_reward(value, spent, target))
        volume = hypervolume(found, reference) if found else 0.0
        results.append((checkpoint, volume, 1000 * ask_seconds / max(queries, 1)))
    return results
