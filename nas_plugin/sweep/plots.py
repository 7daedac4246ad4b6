"""A finished sweep's plots, logged once as PNG artifacts under ``plots/`` of its parent run.

- ``plots/trajectory.png``: each trial's objective and the best so far against trial number;
- ``plots/objective_vs_cost.png``: the objective against ``params`` / ``latency_ms`` (and the
  other objectives of a multi-objective sweep), the Pareto front highlighted;
- ``plots/predicted_vs_actual.png``: the learned predictor's held-out predictions (with
  ``hydra/sweeper/predictor``) against the scores the trials reached;
- ``plots/proxy_vs_objective.png``: the pre-screen's proxy scores of the trained candidates
  against their objective, with Spearman rho and Kendall tau (as ``nas-plugin proxies
  correlate`` draws it);
- ``plots/hyperband_rungs.png``: Hyperband's trials per rung against the rung's budget.

A plot without data (no cost metric, no predictor, ...) is left out. Drawing costs a fraction
of a second; a failure is a warning, never the sweep's end.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from nas_plugin import figures
from nas_plugin.estimators.hyperband import Hyperband
from nas_plugin.leaderboard import TrialRecord
from nas_plugin.sweep.plan import SweepPlan
from nas_plugin.sweep.search_aids import SearchAids
from nas_plugin.tracking.sweep_run import SweepRun

log = logging.getLogger("nas_plugin.sweeper")

ARTIFACT_DIR = "plots"
# Hardware costs a trial may report (nas_plugin.hardware): the x axes of objective_vs_cost.
COSTS = ("params", "latency_ms", "flops", "peak_memory_mb")


def sweep_figures(
    plan: SweepPlan, records: list[TrialRecord], aids: SearchAids | None = None
) -> dict[str, Any]:
    """File name -> figure, for every plot this sweep has data for."""
    done = sorted((r for r in records if r.ok and r.value is not None), key=lambda r: r.number)
    if not done:
        return {}
    metric = plan.metric_name
    drawn = {"trajectory.png": _trajectory(done, metric)}
    costs = _costs(plan, done)
    if costs:
        front = [plan.objective.multi and r.pareto_rank == 0 for r in done]
        points = {c: [(float(r.metrics[c]), float(r.value)) for r in done] for c in costs}
        drawn["objective_vs_cost.png"] = figures.objective_vs_costs(points, front, metric)
    if aids is not None and len(aids.predictions) >= 2:
        predicted, actual = zip(*aids.predictions.values(), strict=True)
        name = aids.held_out.predictor.model if aids.held_out is not None else "predictor"
        rho = _spearman(predicted, actual)
        title = f"Predictor {name}: {len(predicted)} held-out, rho={rho:.2f}"
        drawn["predicted_vs_actual.png"] = figures.predicted_vs_actual(predicted, actual, title)
    proxy = _proxy_scatter(done, aids, metric) if aids is not None else None
    if proxy is not None:
        drawn["proxy_vs_objective.png"] = proxy
    if isinstance(plan.estimator, Hyperband):
        counts = Counter(
            (r.bracket, r.budget) for r in records if r.rung is not None and r.budget is not None
        )
        brackets: dict[int, list[tuple[float, int]]] = {}
        for (bracket, budget), count in sorted(counts.items()):
            brackets.setdefault(bracket, []).append((budget, count))
        if brackets:
            key = plan.estimator.budget_key
            drawn["hyperband_rungs.png"] = figures.rung_diagram(brackets, key)
    return drawn


def log_sweep_plots(
    sweep_run: SweepRun,
    plan: SweepPlan,
    records: list[TrialRecord],
    aids: SearchAids | None = None,
) -> list[str]:
    """Draw and log the plots (one upload); returns the artifact paths logged."""
    started = time.perf_counter()
    try:
        drawn = sweep_figures(plan, records, aids)
        if not drawn:
            return []
        with tempfile.TemporaryDirectory() as folder:
            for name, figure in drawn.items():
                figure.savefig(Path(folder) / name, dpi=80)
            sweep_run.client.log_artifacts(sweep_run.run_id, folder, ARTIFACT_DIR)
    except Exception as err:  # noqa: BLE001 - plots are a view; the sweep's results stand
        log.warning("Could not draw the sweep's plots: %s: %s", type(err).__name__, err)
        return []
    log.info(
        "Plots on the parent run: %s (%.2f s)",
        ", ".join(f"{ARTIFACT_DIR}/{name}" for name in drawn),
        time.perf_counter() - started,
    )
    return [f"{ARTIFACT_DIR}/{name}" for name in drawn]


def _trajectory(done: list[TrialRecord], metric: str) -> Any:
    best: list[float] = []
    leader: TrialRecord | None = None
    for record in done:
        # Ranked by the strategy's score (minimised metrics negated), shown as the metric.
        if leader is None or _first(record.score) > _first(leader.score):
            leader = record
        best.append(float(leader.value))
    return figures.trajectory(
        [r.number for r in done], [float(r.value) for r in done], best, metric
    )


def _costs(plan: SweepPlan, done: list[TrialRecord]) -> list[str]:
    """Cost metrics every successful trial reported, and the other objectives."""
    names = [*plan.objective.metrics[1:], *COSTS]
    unique = [n for i, n in enumerate(names) if n not in names[:i] and n != plan.metric_name]
    return [n for n in unique if all(_finite(r.metrics.get(n)) for r in done)]


def _proxy_scatter(done: list[TrialRecord], aids: SearchAids, metric: str) -> Any | None:
    """The pre-screen's raw proxy scores of the trained candidates against their metric."""
    screener = aids.prescreener
    if screener is None:
        return None
    by_number = {r.number: r for r in done}
    rows = []
    for row in screener.rows:
        record = by_number.get(row.trial) if row.trial is not None else None
        if record is not None and row.proxy_scores:
            rows.append({**row.proxy_scores, metric: float(record.value)})
    if len(rows) < 2:
        return None
    from scipy.stats import kendalltau

    proxies = [p for p in rows[0] if p != metric and all(_finite(r.get(p)) for r in rows)]
    if not proxies:
        return None
    truth = [r[metric] for r in rows]
    table = []
    for proxy in proxies:
        values = [r[proxy] for r in rows]
        constant = len(set(values)) < 2 or len(set(truth)) < 2
        table.append(
            {
                "spearman": math.nan if constant else _spearman(values, truth),
                "kendall": math.nan if constant else float(kendalltau(values, truth)[0]),
            }
        )
    return figures.proxy_scatter(table, rows, proxies, metric)


def _spearman(xs: Any, ys: Any) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys)[0]) if len(set(xs)) > 1 and len(set(ys)) > 1 else math.nan


def _first(score: float | tuple[float, ...] | None) -> float:
    if isinstance(score, tuple):
        return score[0]
    return -math.inf if score is None else float(score)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
