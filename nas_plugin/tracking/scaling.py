"""The compound-scaling curve on the sweep's parent run (``strategy=compound``).

After the sweep, from its finished trials: metric series ``scaling/<metric>``,
``scaling/flops`` and ``scaling/params`` with ``step = phi`` (the best grid point's phi = 1 and
every scaled model), params ``scaling.alpha`` / ``beta`` / ``gamma`` (the found coefficients),
and ``scaling_curve.png``: the metric against FLOPs, grid trials grey, the scaled models joined
and labelled by phi. The MLflow UI plots the series; the PNG needs matplotlib (Agg).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from nas_plugin.importing import load_object
from nas_plugin.strategies.base import Strategy
from nas_plugin.strategies.compound import PREFIX

COEFFICIENTS = ("alpha", "beta", "gamma")


def report_end_of_sweep(
    strategy: Strategy, client: MlflowClient, parent_run_id: str, metric: str
) -> None:
    """Call the strategy's ``end_of_sweep_report`` ("module:function", taking the client, the
    parent run id and the objective metric), if it names one."""
    target = getattr(strategy, "end_of_sweep_report", None)
    if target:
        load_object(str(target))(client, parent_run_id, metric)


def scaling_points(client: MlflowClient, parent_run_id: str, metric: str) -> list[dict[str, Any]]:
    """One dict per finished trial: alpha, beta, gamma, phi, the metric, flops, params."""
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`nas.status` = 'ok'",
        max_results=1000,
    )
    points = []
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        keys = [f"{PREFIX}.{c}" for c in (*COEFFICIENTS, "phi")]
        if not all(k in params for k in keys) or metric not in metrics:
            continue
        point = {c: float(params[f"{PREFIX}.{c}"]) for c in (*COEFFICIENTS, "phi")}
        point.update(
            value=metrics[metric],
            flops=metrics.get("flops", float("nan")),
            params=metrics.get("params", float("nan")),
            trial=int(run.data.tags.get("nas.trial", -1)),
        )
        points.append(point)
    return sorted(points, key=lambda p: p["trial"])


def log_scaling_curve(client: MlflowClient, parent_run_id: str, metric: str) -> None:
    """Log the curve of the best grid point's coefficients (see the module doc)."""
    points = scaling_points(client, parent_run_id, metric)
    grid = [p for p in points if p["phi"] == 1]
    if not grid:
        return
    best = max(grid, key=lambda p: p["value"])
    found = tuple(best[c] for c in COEFFICIENTS)
    curve = [p for p in points if tuple(p[c] for c in COEFFICIENTS) == found]
    curve.sort(key=lambda p: p["phi"])
    for point in curve:
        step = int(point["phi"])
        client.log_metric(parent_run_id, f"scaling/{metric}", point["value"], step=step)
        client.log_metric(parent_run_id, "scaling/flops", point["flops"], step=step)
        client.log_metric(parent_run_id, "scaling/params", point["params"], step=step)
    for name, value in zip(COEFFICIENTS, found, strict=True):
        client.log_param(parent_run_id, f"scaling.{name}", value)
    _log_plot(client, parent_run_id, metric, grid, curve)


def _log_plot(
    client: MlflowClient,
    run_id: str,
    metric: str,
    grid: list[dict[str, Any]],
    curve: list[dict[str, Any]],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter([p["flops"] for p in grid], [p["value"] for p in grid], c="0.7", label="grid, phi=1")
    ax.plot([p["flops"] for p in curve], [p["value"] for p in curve], "o-", label="scaled")
    for p in curve:
        ax.annotate(f"phi={p['phi']:g}", (p["flops"], p["value"]), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs")
    ax.set_ylabel(metric)
    a, b, g = (curve[0][c] for c in COEFFICIENTS)
    ax.set_title(f"compound scaling: alpha={a:g} beta={b:g} gamma={g:g}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scaling_curve.png"
        fig.savefig(path, dpi=100)
        client.log_artifact(run_id, str(path))
    plt.close(fig)
