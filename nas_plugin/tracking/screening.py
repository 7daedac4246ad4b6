"""MLflow records of the pre-screen and the learned predictor (sweeper side).

Parent run: ``prescreen.csv`` (every candidate of every pool: its proxy score, predicted score,
rank in its pool, whether it was kept and the trial that trained it), metrics
``prescreen_screened_out`` and ``prescreen_seconds``, and the predictor's held-out rank
correlation ``predictor_spearman`` / ``predictor_kendall`` (step = trials finished).
Trial runs of kept candidates: ``prescreen_<proxy>``, ``prescreen_rank``, ``prescreen_round``,
and ``predicted_score`` when the predictor had predicted the trial before it finished.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

PRESCREEN_TABLE = "prescreen.csv"


def log_metrics(
    client: MlflowClient, run_id: str | None, metrics: Mapping[str, float], step: int = 0
) -> None:
    """Finite metrics at ``step`` (a NaN or infinite proxy score is left out)."""
    if run_id is None:
        return
    now = int(time.time() * 1000)
    batch = [
        Metric(k, float(v), now, step)
        for k, v in metrics.items()
        if v is not None and abs(float(v)) != float("inf") and float(v) == float(v)
    ]
    if batch:
        client.log_batch(run_id, metrics=batch)


def log_table(client: MlflowClient, run_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """``prescreen.csv`` on the parent run (rewritten as pools are screened)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), restval="")
    writer.writeheader()
    writer.writerows(rows)
    client.log_text(run_id, out.getvalue(), PRESCREEN_TABLE)
