"""The learned predictor on NAS-Bench-201 (CIFAR-10 table): held-out rank correlation, and what
a predictor-ranked pre-screen saves regularized evolution.

    python tests/benchmarks/predictor.py [--seeds 10] [--trials 100] [--search-seeds 20]

Runs in process, the way the sweeper drives the pieces (no Hydra, no MLflow, so it takes
seconds): a strategy with its shipped options proposes, each new cell is looked up in the
packaged table (``cifar10_test_acc``), and before the strategy is told the result the sweep's
predictor (:class:`~nas_plugin.predictors.HeldOutCorrelation`, shipped options) predicts it.

1. **Correlation**: Spearman's rho and Kendall's tau between predicted and actual accuracy over
   all held-out trials after 25, 50 and ``--trials`` trials, and over the last 50 trials only,
   for random search and evolution, gp and mlp; mean ± std over ``--seeds``.
2. **Pre-screen**: trained trials (distinct cells looked up) that evolution needs to find a
   cell in the table's top 5 % and top 1 %, without and with a pre-screen
   (``hydra/sweeper/prescreen=zero_cost``, ``proxy: null``, ``rank_by: predictor``: K=10
   proposals per step, the predictor's favourite
   trained, the strategy's own order until ``predictor_after`` trials have finished); mean ±
   std over ``--search-seeds`` (capped at ``--cap`` trials).
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable

import numpy as np

from nas_plugin.bench.harness import default_options, table_objective
from nas_plugin.benchmark_table import BenchmarkTable
from nas_plugin.predictors import HeldOutCorrelation, Predictor
from nas_plugin.space import Encoding, nb201
from nas_plugin.strategies import Strategy, make_strategy
from nas_plugin.sweep.prescreen import PrescreenConfig, Prescreener

METRIC = "cifar10_test_acc"


def drive(
    strategy: Strategy,
    objective: Callable[[Encoding], float | None],
    trials: int,
    on_result: Callable[[int, Encoding, float | None], None],
    prescreener: Prescreener | None = None,
) -> None:
    """The sweeper's loop: new candidates only (a repeat hears its known result), one trial at
    a time, optionally through a pre-screen."""
    seen: dict[Encoding, float | None] = {}

    def propose(count: int, exclude: set[Encoding]) -> list[Encoding]:
        batch: list[Encoding] = []
        duplicates = 0
        while len(batch) < count and duplicates < 100:
            candidate = strategy.ask()
            if candidate is None:
                break
            if candidate in seen or candidate in batch or candidate in exclude:
                duplicates += 1
                if candidate in seen:
                    strategy.tell(candidate, seen[candidate])
                continue
            duplicates = 0
            batch.append(candidate)
        return batch

    for trial in range(trials):
        if prescreener is None:
            batch = propose(1, set())
        else:
            batch = prescreener.next(propose, 1, lambda e: strategy.tell(e, None))
        if not batch:
            return
        (candidate,) = batch
        value = objective(candidate)
        on_result(trial + 1, candidate, value)
        seen[candidate] = value
        strategy.tell(candidate, value)


def correlation_table(objective, seeds: int, trials: int) -> list[str]:
    space = nb201.search_space()
    lines = [
        f"| strategy | predictor | rho@25 | rho@50 | rho@{trials} | tau@{trials} "
        f"| rho, last 50 @{trials} | ms/trial |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    import time

    for strategy_name in ("random", "evolution"):
        for model in ("gp", "mlp"):
            at: dict[str, list[float]] = {"25": [], "50": [], "end": [], "tau": [], "last": []}
            seconds = 0.0
            for seed in range(seeds):
                strategy = make_strategy(
                    {"name": strategy_name, **default_options(strategy_name)}, space, seed
                )
                held_out = HeldOutCorrelation(Predictor(space, seed, model=model))

                def on_result(n, encoding, value, held_out=held_out, at=at):
                    held_out.observe(encoding, value)
                    if n in (25, 50):
                        at[str(n)].append(held_out.correlation()["spearman"])

                start = time.perf_counter()
                drive(strategy, objective, trials, on_result)
                seconds += time.perf_counter() - start
                end = held_out.correlation()
                at["end"].append(end["spearman"])
                at["tau"].append(end["kendall"])
                last = HeldOutCorrelation(held_out.predictor, window=50)
                last.pairs = held_out.pairs
                at["last"].append(last.correlation()["spearman"])
            cells = " | ".join(
                f"{statistics.mean(at[k]):.2f} ± {statistics.pstdev(at[k]):.2f}"
                for k in ("25", "50", "end", "tau", "last")
            )
            lines.append(
                f"| {strategy_name} | {model} | {cells} | {1000 * seconds / seeds / trials:.1f} |"
            )
    return lines


def prescreen_table(objective, table: BenchmarkTable, seeds: int, cap: int) -> list[str]:
    space = nb201.search_space()
    values = np.array([r[METRIC] for r in table.rows.values() if math.isfinite(r[METRIC])])
    top5, top1 = (float(np.quantile(values, q)) for q in (0.95, 0.99))
    lines = [
        f"Trained trials until a cell in the table's top 5 % ({METRIC} >= {top5:.2f}) / top 1 % "
        f"(>= {top1:.2f}), mean ± std over {seeds} seeds, capped at {cap}; best after 100 "
        "trials; runs that ended early (100 proposals in a row already trained: the sweeper's "
        "'space exhausted' rule) and their mean length",
        "",
        "| evolution | trials to top 5 % | trials to top 1 % | best @100 | ended early |",
        "| --- | --- | --- | --- | --- |",
    ]
    variants = {
        "no pre-screen": None,
        "pre-screen K=10 k=1, gp predictor after 10": 10,
        "pre-screen K=10 k=1, gp predictor after 20": 20,
    }
    for label, after in variants.items():
        to5, to1, best100, early = [], [], [], []
        for seed in range(seeds):
            strategy = make_strategy(
                {"name": "evolution", **default_options("evolution")}, space, seed
            )
            prescreener = None
            if after is not None:
                config = PrescreenConfig.from_config(
                    {
                        "name": "zero_cost",
                        "pool": 10,
                        "keep": 1,
                        "proxy": None,
                        "rank_by": "predictor",
                        "predictor_after": after,
                    },
                    seed=seed,
                    estimator_config={"name": "tabular"},
                    has_predictor=True,
                )
                prescreener = Prescreener(config, cap, lambda e: None, Predictor(space, seed))
            state = {"to5": cap, "to1": cap, "best": -math.inf, "best100": None, "n": 0}

            def on_result(n, encoding, value, state=state, prescreener=prescreener):
                if prescreener is not None:
                    prescreener.predictor.add(encoding, value)
                state["n"] = n
                if value is not None:
                    state["best"] = max(state["best"], value)
                    if value >= top5:
                        state["to5"] = min(state["to5"], n)
                    if value >= top1:
                        state["to1"] = min(state["to1"], n)
                if n == 100:
                    state["best100"] = state["best"]

            drive(strategy, objective, cap, on_result, prescreener)
            if state["n"] < cap:
                early.append(state["n"])
            to5.append(state["to5"])
            to1.append(state["to1"])
            best100.append(state["best"] if state["best100"] is None else state["best100"])
        lines.append(
            f"| {label} | {statistics.mean(to5):.1f} ± {statistics.pstdev(to5):.1f} "
            f"| {statistics.mean(to1):.1f} ± {statistics.pstdev(to1):.1f} "
            f"| {statistics.mean(best100):.2f} | {len(early)}/{seeds}"
            f"{f' (after {statistics.mean(early):.0f})' if early else ''} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--search-seeds", type=int, default=20)
    parser.add_argument("--cap", type=int, default=500)
    parser.add_argument("--skip", choices=["correlation", "prescreen"], action="append")
    args = parser.parse_args()
    table = BenchmarkTable.load("nb201_cifar10")
    objective = table_objective(table, METRIC)
    skip = set(args.skip or ())
    if "correlation" not in skip:
        print(f"Held-out rank correlation of the predictor, NB201 CIFAR-10 ({args.seeds} seeds)")
        print("\n".join(correlation_table(objective, args.seeds, args.trials)), flush=True)
        print()
    if "prescreen" not in skip:
        print("\n".join(prescreen_table(objective, table, args.search_seeds, args.cap)))


if __name__ == "__main__":
    main()
