"""Trial records, the leaderboard, and the one-line progress report of a sweep."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from nas_plugin.space import Encoding

# Hardware metrics shown beside the objective when the trial reported them.
COST_COLUMNS = ("params", "flops", "latency_ms", "peak_memory_mb")


@dataclass
class TrialRecord:
    number: int
    encoding: Encoding
    architecture: dict[str, Any]
    overrides: list[str]
    status: str = "running"  # ok | failed
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    error: str | None = None
    seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.value is not None


def ranked(records: list[TrialRecord], direction: str) -> list[TrialRecord]:
    """Successful trials, best first (ties: the earlier trial first)."""
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted((r for r in records if r.ok), key=lambda r: (sign * r.value, r.number))


def best_of(records: list[TrialRecord], direction: str) -> TrialRecord | None:
    order = ranked(records, direction)
    return order[0] if order else None


def summarize(architecture: dict[str, Any], width: int = 60) -> str:
    """A short ``k=v`` line; keys shortened to their last two parts (``s2.kernel=5``)."""
    parts = []
    for key, value in architecture.items():
        short = ".".join(key.split(".")[-2:])
        parts.append(f"{short}={json.dumps(value) if isinstance(value, list) else value}")
    text = " ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


def to_csv(records: list[TrialRecord], direction: str, metric: str) -> str:
    """Every trial: ranked successes first, then failures, with full architecture columns."""
    keys: list[str] = []
    for record in records:
        keys.extend(k for k in record.architecture if k not in keys)
    metric_keys: list[str] = []
    for record in records:
        metric_keys.extend(k for k in record.metrics if k not in metric_keys and k != metric)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", "trial", "status", metric, *metric_keys, *keys, "run_id", "error"])
    order = ranked(records, direction)
    failed = [r for r in records if not r.ok]
    for rank, record in enumerate([*order, *failed], start=1):
        writer.writerow(
            [
                rank if record.ok else "",
                record.number,
                record.status,
                record.value if record.value is not None else "",
                *[record.metrics.get(k, "") for k in metric_keys],
                *[_cell(record.architecture.get(k, "")) for k in keys],
                record.run_id or "",
                record.error or "",
            ]
        )
    return out.getvalue()


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def render(records: list[TrialRecord], direction: str, metric: str, rows: int) -> str:
    """The leaderboard as a table for the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"NAS leaderboard ({metric}, {direction})")
    for column in ("rank", "trial", "architecture", metric, "params", "latency_ms"):
        table.add_column(column, justify="left" if column == "architecture" else "right")
    for rank, record in enumerate(ranked(records, direction)[:rows], start=1):
        table.add_row(
            str(rank),
            str(record.number),
            summarize(record.architecture),
            f"{record.value:.4g}",
            _fmt(record.metrics.get("params")),
            _fmt(record.metrics.get("latency_ms")),
        )
    failed = sum(1 for r in records if not r.ok)
    buffer = io.StringIO()
    console = Console(file=buffer, width=140, force_terminal=False)
    console.print(table)
    if failed:
        console.print(f"{failed} trial(s) failed; see leaderboard.csv and their MLflow runs.")
    return buffer.getvalue()


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.3g}"


def progress_line(
    record: TrialRecord, done: int, total: int, best: TrialRecord | None, metric: str
) -> str:
    """``[3/10] trial 2 ok val_accuracy=0.9123 (4.1s) | best 0.9344 (trial 1)``."""
    if record.ok:
        result = f"ok {metric}={record.value:.4g}"
    else:
        result = f"FAILED ({record.error})"
    took = f" ({record.seconds:.1f}s)" if record.seconds is not None else ""
    best_text = f"best {best.value:.4g} (trial {best.number})" if best else "best -"
    return f"[{done}/{total}] trial {record.number} {result}{took} | {best_text}"
