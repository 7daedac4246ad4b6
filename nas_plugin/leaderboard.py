"""Trial records, the leaderboard, and the one-line progress report of a sweep."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from nas_plugin.objective import Objective
from nas_plugin.space import Encoding


@dataclass
class TrialRecord:
    number: int
    encoding: Encoding
    architecture: dict[str, Any]
    overrides: list[str]
    status: str = "running"  # ok | pruned | failed
    value: float | None = None  # the primary objective metric, as the trial reported it
    score: float | tuple[float, ...] | None = None  # the strategy's view: higher is better
    pareto_rank: int | None = None  # multi-objective sweeps: 0 = on the Pareto front
    budget: float | None = None  # multi-fidelity sweeps: the budget it was trained with
    rung: int | None = None
    bracket: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    error: str | None = None
    seconds: float | None = None
    pruned_step: int | None = None  # stopped early by the pruner at this step

    @property
    def ok(self) -> bool:
        """The trial has a result: it finished, or the pruner stopped it with its last value."""
        return self.status in ("ok", "pruned") and self.value is not None


def ranked(records: list[TrialRecord]) -> list[TrialRecord]:
    """Successful trials, best first: by Pareto rank (multi-objective), then fully trained
    before pruned, then by budget (multi-fidelity: fully trained before cheaply trained), then
    by score on the first objective; ties go to the earlier trial."""
    done = [r for r in records if r.ok and r.score is not None]
    return sorted(
        done,
        key=lambda r: (
            r.pareto_rank or 0,
            r.status == "pruned",
            -(r.budget or 0),
            -_first(r.score),
            r.number,
        ),
    )


def best_of(records: list[TrialRecord]) -> TrialRecord | None:
    order = ranked(records)
    return order[0] if order else None


def _first(score: float | tuple[float, ...] | None) -> float:
    return score[0] if isinstance(score, tuple) else float(score or 0.0)


def summarize(architecture: dict[str, Any], width: int = 60) -> str:
    """A short ``k=v`` line: a first key part all keys share is dropped (``model.``), and keys
    keep their last two parts (``s2.kernel=5``)."""
    split = [key.split(".") for key in architecture]
    shared = len({parts[0] for parts in split}) == 1 and all(len(p) > 1 for p in split)
    items = []
    for parts, value in zip(split, architecture.values(), strict=True):
        short = ".".join((parts[1:] if shared else parts)[-2:])
        text = value if isinstance(value, str) else json.dumps(value)  # true, not True
        items.append(f"{short}={text}")
    line = " ".join(items)
    return line if len(line) <= width else line[: width - 1] + "…"


def to_csv(records: list[TrialRecord], metric: str) -> str:
    """Every trial: ranked successes first, then failures, with full architecture columns."""
    keys: list[str] = []
    for record in records:
        keys.extend(k for k in record.architecture if k not in keys)
    metric_keys: list[str] = []
    for record in records:
        metric_keys.extend(k for k in record.metrics if k not in metric_keys and k != metric)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "rank",
            "trial",
            "status",
            metric,
            "pareto_rank",
            "score",
            *metric_keys,
            *keys,
            "run_id",
            "error",
            "pruned_step",
        ]
    )
    order = ranked(records)
    failed = [r for r in records if not r.ok]
    for rank, record in enumerate([*order, *failed], start=1):
        writer.writerow(
            [
                rank if record.ok else "",
                record.number,
                record.status,
                record.value if record.value is not None else "",
                "" if record.pareto_rank is None else record.pareto_rank,
                _cell(record.score) if record.score is not None else "",
                *[record.metrics.get(k, "") for k in metric_keys],
                *[_cell(record.architecture.get(k, "")) for k in keys],
                record.run_id or "",
                record.error or "",
                "" if record.pruned_step is None else record.pruned_step,
            ]
        )
    return out.getvalue()


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict | tuple) else value


def render(
    records: list[TrialRecord],
    objective: Objective,
    rows: int,
    columns: tuple[str, ...] = ("params", "latency_ms"),
) -> str:
    """The leaderboard as a table for the terminal (rich); ``columns``: extra metrics shown."""
    from rich.console import Console
    from rich.table import Table

    metrics = list(objective.metrics) or [objective.primary]
    extra = [m for m in columns if m not in metrics]
    title = ", ".join(f"{m} {d}" for m, d in zip(metrics, objective.directions, strict=False))
    table = Table(title=f"NAS leaderboard ({title})")
    headers = ["rank", "trial", "architecture", *metrics]
    if objective.multi:
        headers.append("front")
    if objective.reward is not None:
        headers.append("reward")
    pruned = sum(1 for r in records if r.status == "pruned")
    if pruned:
        headers.append("pruned at")
    for column in [*headers, *extra]:
        table.add_column(column, justify="left" if column == "architecture" else "right")
    for rank, record in enumerate(ranked(records)[:rows], start=1):
        cells = [str(rank), str(record.number), summarize(record.architecture)]
        cells += [_fmt(record.metrics.get(m)) for m in metrics]
        if objective.multi:
            cells.append("*" if record.pareto_rank == 0 else "")
        if objective.reward is not None:
            cells.append(f"{_first(record.score):.4g}")
        if pruned:
            cells.append("" if record.pruned_step is None else f"step {record.pruned_step}")
        cells += [_fmt(record.metrics.get(m)) for m in extra]
        table.add_row(*cells)
    failed = sum(1 for r in records if not r.ok)
    buffer = io.StringIO()
    console = Console(file=buffer, width=140, force_terminal=False)
    console.print(table)
    if failed:
        console.print(f"{failed} trial(s) failed; see leaderboard.csv and their MLflow runs.")
    if pruned:
        console.print(
            f"{pruned} trial(s) pruned early (ranked after the fully trained ones; MLflow tag "
            "nas.status=pruned)."
        )
    return buffer.getvalue()


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.4g}"


def progress_line(
    record: TrialRecord, done: int, total: int, best: TrialRecord | None, metric: str
) -> str:
    """``[3/10] trial 2 ok val_accuracy=0.9123 (4.1s) | best 0.9344 (trial 1)``."""
    if record.status == "pruned":
        result = f"pruned at step {record.pruned_step} {metric}={record.value:.4g}"
    elif record.ok:
        result = f"ok {metric}={record.value:.4g}"
    else:
        result = f"FAILED ({record.error})"
    took = f" ({record.seconds:.1f}s)" if record.seconds is not None else ""
    if record.budget is not None:
        took += f" [budget {record.budget:g}, rung {record.rung}]"
    best_text = f"best {best.value:.4g} (trial {best.number})" if best else "best -"
    return f"[{done}/{total}] trial {record.number} {result}{took} | {best_text}"
