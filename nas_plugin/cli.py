"""The ``nas-plugin`` command line.

    nas-plugin bench nb201 [--table nb201_cifar10] [--metric cifar10_test_acc] [--report COL]
                           [--cost COL] [--strategy NAME[opt=value,...] ...] [--queries 300]
                           [--seeds 30] [--option [STRATEGY.]NAME=VALUE ...] [--proxy COL]
                           [--json]

``bench nb201`` runs search strategies against a NAS-Bench-201 table in process (no Hydra, no
MLflow) and prints, for the best candidate found (by ``--metric``) after 25, 50, 100, 150 and
300 queries, its ``--report`` column (default: the metric) as mean ± std, median and the value
90 % of the seeds reach, next to Optuna's TPE. With ``--cost`` it runs the multi-objective
benchmark (metric vs cost) instead.

    nas-plugin proxies correlate --experiment NAME [--tracking-uri URI] [--metric COL]
                                 [--proxies NAME ...] [--max-trials N]

``proxies correlate`` rebuilds the untrained model of every finished trial of the experiment's
latest sweep, scores it with each zero-cost proxy, prints each proxy's Spearman rho and Kendall
tau with the trained metric, and logs the table (CSV) and a scatter plot (PNG) to the sweep's
parent run (``nas_plugin/proxies/report.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from nas_plugin.correlate_options import CORRELATE_DESCRIPTION, add_correlate_arguments

BENCHMARKS = ("nb201",)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nas-plugin`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench(args, parser)
    if args.command == "proxies" and args.proxies_command == "correlate":
        from nas_plugin.proxies.report import run_correlate

        return run_correlate(args, args.correlate_parser)
    parser.print_help()
    return 2


def _parser() -> argparse.ArgumentParser:
    from nas_plugin.bench.harness import DEFAULT_CHECKPOINTS, DEFAULT_STRATEGIES

    parser = argparse.ArgumentParser(prog="nas-plugin", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    bench = commands.add_parser(
        "bench",
        help="benchmark search strategies on a tabular NAS benchmark",
        description="Run strategies in process against a benchmark table, side by side with "
        "Optuna's TPE ('tpe'), and print the best metric found after each checkpoint.",
    )
    bench.add_argument("benchmark", choices=BENCHMARKS, help="the search space of the table")
    bench.add_argument(
        "--table", default="nb201_cifar10", help="a packaged table's name or a CSV/CSV.gz path"
    )
    bench.add_argument("--metric", default="cifar10_test_acc", help="the column to search on")
    bench.add_argument(
        "--report",
        default=None,
        help="the column reported for the best candidate by --metric (default: the metric; "
        "search on a validation column and report the test one, as papers do)",
    )
    bench.add_argument(
        "--proxy",
        default=None,
        help="zero-cost column(s), comma-separated (mean rank), that a row's warm-up "
        "(warmup_pool=N) ranks by: from the table or the packaged nb201_zero_cost scores",
    )
    bench.add_argument(
        "--minimize", action="store_true", help="the metric is better when lower (default: higher)"
    )
    bench.add_argument(
        "--cost", help="a cost column (e.g. lat_ms_gold_6226): run the multi-objective benchmark"
    )
    bench.add_argument(
        "--strategy",
        action="append",
        help="a strategy to run, repeatable; NAME[option=value,...] is a row with its own "
        f"options (default: {' '.join(DEFAULT_STRATEGIES)})",
    )
    bench.add_argument("--queries", type=_positive, default=300, help="queries per run")
    bench.add_argument("--seeds", type=_positive, default=30, help="runs per strategy")
    bench.add_argument(
        "--checkpoints",
        type=_checkpoints,
        default=DEFAULT_CHECKPOINTS,
        help="comma-separated query counts to report (default: %(default)s)",
    )
    bench.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="[STRATEGY.]NAME=VALUE",
        help="a strategy option (YAML value), repeatable; without a STRATEGY prefix it goes to "
        "every selected strategy that takes it",
    )
    bench.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    _proxies_parser(commands)
    return parser


def _proxies_parser(commands: Any) -> None:
    proxies = commands.add_parser("proxies", help="zero-cost proxies: correlation report")
    sub = proxies.add_subparsers(dest="proxies_command", required=True)
    correlate = sub.add_parser(
        "correlate",
        help="rank correlation of each proxy with an experiment's trained metric",
        description=CORRELATE_DESCRIPTION,
    )
    add_correlate_arguments(correlate)
    correlate.set_defaults(correlate_parser=correlate)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _checkpoints(text: str) -> tuple[int, ...]:
    try:
        return tuple(_positive(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of positive integers"
        ) from None


def _bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from nas_plugin.bench.harness import DEFAULT_STRATEGIES, BenchError, parse_row, run_benchmark
    from nas_plugin.benchmark_table import TableError
    from nas_plugin.strategies import StrategyError

    strategies = args.strategy or list(DEFAULT_STRATEGIES)
    try:
        if args.cost:
            if args.option:
                parser.error("--option is not supported together with --cost")
            return _pareto(args, strategies)
        names = list(dict.fromkeys(parse_row(row)[0] for row in strategies))
        options = parse_options(args.option, names)
        result = run_benchmark(
            args.table,
            args.metric,
            strategies,
            args.checkpoints,
            args.seeds,
            args.queries,
            options,
            maximize=not args.minimize,
            progress=None if args.json else _progress,
            report=args.report,
            proxy=args.proxy,
        )
    except (BenchError, StrategyError, TableError) as err:
        print(f"nas-plugin bench: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    direction = "highest" if result.maximize else "lowest"
    searched = "" if result.reported == result.metric else f" (searched on {result.metric})"
    print(
        f"\n{result.reported} on {result.table}{searched}: best found after N queries over "
        f"{result.seeds} seeds, mean ± std · median · p10 (90 % of seeds reach it); "
        f"{direction} in the table: {result.optimum:g}\n"
    )
    print(result.markdown())
    return 0


def _progress(trace: Any) -> None:
    print(f"  {trace.strategy}: done ({trace.ms_per_ask:.2f} ms/ask)", file=sys.stderr)


def parse_options(items: Sequence[str], strategies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["bo.parents=3", "start_samples=5"]`` -> ``{"bo": {"parents": 3}, ...}``.

    An unprefixed option goes to every selected strategy whose constructor takes it.
    """
    from nas_plugin.bench.harness import TPE, BenchError
    from nas_plugin.strategies import STRATEGIES
    from nas_plugin.strategies.base import check_options

    options: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--option {item!r} must look like [strategy.]name=value")
        value = yaml.safe_load(text)
        strategy, dot, name = key.rpartition(".")
        if dot:
            if strategy not in strategies:
                raise BenchError(
                    f"--option {item!r} names strategy {strategy!r}, which is not selected "
                    f"({list(strategies)})"
                )
            targets = [strategy]
        else:
            targets = [s for s in strategies if s in STRATEGIES and _takes(STRATEGIES[s], name)]
            if not targets:
                raise BenchError(
                    f"--option {item!r}: no selected strategy takes option {name!r}; prefix it "
                    "with a strategy name (e.g. tpe.n_startup_trials=5)"
                )
        for target in targets:
            options.setdefault(target, {})[name] = value
    for strategy, given in options.items():
        if strategy != TPE:
            check_options(STRATEGIES[strategy], given)
    return options


def _takes(cls: type, name: str) -> bool:
    from nas_plugin.strategies.base import StrategyError, check_options

    try:
        check_options(cls, {name: None})
    except StrategyError:
        return False
    return True


def _pareto(args: argparse.Namespace, strategies: list[str]) -> int:
    try:
        from nas_plugin.bench.pareto_bench import run_pareto_benchmark
    except ModuleNotFoundError as err:
        if err.name not in ("nas_plugin.bench.pareto_bench",):
            raise
        print(
            "nas-plugin bench: error: --cost needs the multi-objective benchmark "
            "(nas_plugin.bench.pareto_bench), which this installation does not have",
            file=sys.stderr,
        )
        return 2
    from nas_plugin.bench.harness import resolve_checkpoints

    checkpoints = resolve_checkpoints(args.checkpoints, args.queries)
    rows = run_pareto_benchmark(
        args.table, args.metric, args.cost, strategies, checkpoints, args.seeds
    )
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(markdown_rows(rows))
    return 0


def markdown_rows(rows: Sequence[dict[str, Any]]) -> str:
    """Any list of flat dicts as a markdown table (columns in order of first appearance)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
