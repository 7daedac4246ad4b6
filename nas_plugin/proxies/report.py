"""How well do zero-cost proxies predict a finished sweep's trained metric?

:func:`correlation_report` takes the latest sweep of an MLflow experiment, rebuilds every
finished trial's untrained model from its ``trial/config.yaml`` artifact, scores it with each
proxy, and reports each proxy's Spearman rho and Kendall tau with the trained metric and its
seconds per architecture. It prints the table and logs, to the sweep's parent run,
``zero_cost/correlation.csv`` (the table), ``zero_cost/scores.csv`` (every trial's metric and
scores) and ``zero_cost/scatter.png`` (one panel per proxy). From a shell::

    nas-plugin proxies correlate --experiment nas-nb201-digits --tracking-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nas_plugin.figures import proxy_scatter as _scatter
from nas_plugin.proxies import (
    DEFAULT_ENSEMBLE,
    ENSEMBLE,
    PROXIES,
    ProxyError,
    check_proxies,
    ensemble_ranks,
    score,
)
from nas_plugin.proxies.factory import DEFAULT_FACTORY, load_factory

DEFAULT_REPORT_PROXIES: tuple[str, ...] = (*PROXIES, ENSEMBLE)
ARTIFACT_DIR = "zero_cost"
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
COLUMNS = ("proxy", "spearman", "spearman_p", "kendall", "kendall_p", "seconds_per_arch", "trials")


class ReportError(ValueError):
    """The experiment, its sweep or its trials cannot be reported on; the message says why."""


def correlation_report(
    tracking_uri: str,
    experiment: str,
    metric: str = "val_accuracy",
    proxies: Sequence[str] = DEFAULT_REPORT_PROXIES,
    factory: str = DEFAULT_FACTORY,
    max_trials: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per proxy: ``proxy``, ``spearman``, ``spearman_p``, ``kendall``, ``kendall_p``
    (scipy.stats; NaN when a proxy or the metric is constant), ``seconds_per_arch`` (scoring
    only; for ``ensemble`` the sum of its members') and ``trials``.

    Uses the finished trials (tag ``nas.status=ok``) of the experiment's latest sweep that
    report ``metric``, in trial order, at most ``max_trials`` of them; each is rebuilt by
    ``factory`` with one minibatch of ``batch_size`` examples drawn with ``seed``.
    """
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from nas_plugin.tracking.sweep_run import resolve_tracking_uri

    names = check_proxies(proxies, allow_ensemble=True)
    expanded = (DEFAULT_ENSEMBLE if name == ENSEMBLE else (name,) for name in names)
    members = tuple(dict.fromkeys(m for group in expanded for m in group))
    if max_trials is not None and (isinstance(max_trials, bool) or max_trials < 2):
        raise ReportError(f"max_trials={max_trials!r} must be null or an integer >= 2")
    build = load_factory(factory)
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    parent, trials = _latest_sweep(client, experiment, metric)
    if max_trials is not None:
        trials = trials[:max_trials]

    truth, scores, seconds = [], [], dict.fromkeys(members, 0.0)
    with tempfile.TemporaryDirectory() as folder, _no_progress_bars():
        for run in trials:
            path = client.download_artifacts(run.info.run_id, "trial/config.yaml", folder)
            model, inputs, targets = build(OmegaConf.load(path), batch_size, 1, seed)
            row: dict[str, float] = {}
            for member in members:
                start = time.perf_counter()
                row.update(score(model, inputs, targets, [member], seed=seed))
                seconds[member] += time.perf_counter() - start
            scores.append(row)
            truth.append(run.data.metrics[metric])
    if ENSEMBLE in names:
        for row, rank in zip(scores, ensemble_ranks(scores, DEFAULT_ENSEMBLE), strict=True):
            row[ENSEMBLE] = rank
        seconds[ENSEMBLE] = sum(seconds[m] for m in DEFAULT_ENSEMBLE)

    table = []
    for name in names:
        rho, rho_p, tau, tau_p = rank_correlation([row[name] for row in scores], truth)
        table.append(
            {
                "proxy": name,
                "spearman": rho,
                "spearman_p": rho_p,
                "kendall": tau,
                "kendall_p": tau_p,
                "seconds_per_arch": seconds[name] / len(trials),
                "trials": len(trials),
            }
        )
    trial_rows = [
        {"trial": int(run.data.tags["nas.trial"]), "run_id": run.info.run_id, metric: value, **row}
        for run, value, row in zip(trials, truth, scores, strict=True)
    ]
    _log_artifacts(client, parent.info.run_id, table, trial_rows, names, metric)
    print(format_table(table, metric, experiment, parent.info.run_name))
    return table


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a progress bar per downloaded file: one per trial would bury the table."""
    previous = os.environ.get(PROGRESS_BAR)
    os.environ[PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = previous


def rank_correlation(
    values: Sequence[float], truth: Sequence[float]
) -> tuple[float, float, float, float]:
    """(Spearman rho, its p-value, Kendall tau, its p-value); a NaN score ranks last."""
    from scipy.stats import kendalltau, spearmanr

    values = [-math.inf if math.isnan(v) else v for v in values]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: NaN, said by the table itself
        rho = spearmanr(values, truth)
        tau = kendalltau(values, truth)
    return float(rho.statistic), float(rho.pvalue), float(tau.statistic), float(tau.pvalue)


def format_table(table: Sequence[dict[str, Any]], metric: str, experiment: str, sweep: str) -> str:
    trials = table[0]["trials"] if table else 0
    lines = [
        f"Zero-cost proxies vs {metric}: {trials} trials of sweep {sweep!r} ({experiment})",
        f"{'proxy':<10} {'spearman':>9} {'kendall':>8} {'s/arch':>8}",
    ]
    for row in table:
        lines.append(
            f"{row['proxy']:<10} {row['spearman']:>9.3f} {row['kendall']:>8.3f} "
            f"{row['seconds_per_arch']:>8.3f}"
        )
    return "\n".join(lines)


def _latest_sweep(client: Any, experiment: str, metric: str) -> tuple[Any, list[Any]]:
    """(the latest parent run, its finished child runs that report ``metric``, by trial)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(f"experiment {experiment!r} does not exist; experiments: {names}")
    parents = client.search_runs(
        [found.experiment_id],
        filter_string="tags.`nas.sweep` = 'parent'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise ReportError(f"experiment {experiment!r} has no NAS sweep (no run tagged nas.sweep)")
    parent = parents[0]
    query = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`nas.status` = 'ok'"
    children, token = [], None
    while True:
        page = client.search_runs(
            [found.experiment_id], filter_string=query, max_results=1000, page_token=token
        )
        children += list(page)
        token = page.token
        if not token:
            break
    usable = [r for r in children if metric in r.data.metrics]
    if len(usable) < 2:
        available = sorted({k for r in children for k in r.data.metrics})
        raise ReportError(
            f"sweep {parent.info.run_name!r} of experiment {experiment!r} has {len(usable)} "
            f"finished trial(s) with metric {metric!r}; a correlation needs at least 2 "
            f"(its trials report: {available})"
        )
    usable.sort(key=lambda r: int(r.data.tags.get("nas.trial", 0)))
    return parent, usable


def _log_artifacts(
    client: Any,
    run_id: str,
    table: list[dict[str, Any]],
    trial_rows: list[dict[str, Any]],
    proxies: Sequence[str],
    metric: str,
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "correlation.csv").write_text(_csv(table, COLUMNS))
        (root / "scores.csv").write_text(_csv(trial_rows, list(trial_rows[0])))
        _scatter(table, trial_rows, proxies, metric).savefig(root / "scatter.png", dpi=100)
        client.log_artifacts(run_id, folder, ARTIFACT_DIR)  # one upload for the three files


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def run_correlate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the report for parsed ``args``; a bad experiment or proxy exits with status 2."""
    given = args.proxies or [",".join(DEFAULT_REPORT_PROXIES)]
    proxies = [p.strip() for item in given for p in item.split(",") if p.strip()]
    try:
        correlation_report(
            args.tracking_uri,
            args.experiment,
            metric=args.metric,
            proxies=proxies,
            factory=args.factory or DEFAULT_FACTORY,
            max_trials=args.max_trials,
            batch_size=args.batch_size,
            seed=args.seed,
        )
    except (ReportError, ProxyError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return 0


def main_correlate(argv: Sequence[str] | None = None) -> int:
    """``correlate``: the report from a shell; returns the exit status."""
    from nas_plugin.correlate_options import CORRELATE_DESCRIPTION, add_correlate_arguments

    parser = argparse.ArgumentParser(prog="nas-plugin correlate", description=CORRELATE_DESCRIPTION)
    add_correlate_arguments(parser)
    return run_correlate(parser.parse_args(argv), parser)
