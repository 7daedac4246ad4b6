"""Benchmark tables: look an architecture up instead of training it.

A table is a CSV (optionally gzipped) with a key column (``arch_str`` by default) and numeric
metric columns, one row per architecture. We ship NAS-Bench-201 on CIFAR-10 (see
``nas_plugin/data/README.md`` for where its figures come from). Pure Python (csv module).
"""

from __future__ import annotations

import csv
import gzip
import math
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
PACKAGED = {"nb201_cifar10": DATA_DIR / "nb201_cifar10.csv.gz"}


class TableError(ValueError):
    """A table that cannot be used: missing file or column, an unknown architecture."""


def resolve_table_path(table: str) -> Path:
    """A packaged table's name (``nb201_cifar10``) or a path to a CSV / CSV.gz file."""
    if table in PACKAGED:
        return PACKAGED[table]
    path = Path(table).expanduser()
    if not path.is_file():
        raise TableError(
            f"benchmark table {table!r} is neither a packaged table ({sorted(PACKAGED)}) nor an "
            "existing file"
        )
    return path


@dataclass
class BenchmarkTable:
    key_column: str
    columns: tuple[str, ...]
    rows: dict[str, dict[str, float]]

    @classmethod
    def load(cls, table: str, key_column: str = "arch_str") -> BenchmarkTable:
        path = resolve_table_path(table)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if key_column not in header:
                raise TableError(
                    f"benchmark table {str(path)!r} has no key column {key_column!r}; its "
                    f"columns are {header}"
                )
            rows: dict[str, dict[str, float]] = {}
            for line, record in enumerate(reader, start=2):
                key = record.pop(key_column)
                if key in rows:
                    raise TableError(
                        f"benchmark table {str(path)!r}: {key_column}={key!r} appears twice "
                        f"(again on line {line}); each architecture needs one row"
                    )
                rows[key] = {name: _number(value) for name, value in record.items()}
        if not rows:
            raise TableError(f"benchmark table {str(path)!r} has no rows")
        columns = tuple(c for c in header if c != key_column)
        return cls(key_column, columns, rows)

    def check_columns(self, *names: str) -> None:
        for name in names:
            if name not in self.columns:
                raise TableError(
                    f"benchmark table has no column {name!r}; its columns are {list(self.columns)}"
                )

    def lookup(self, key: str) -> dict[str, float]:
        try:
            return self.rows[key]
        except KeyError:
            raise TableError(
                f"architecture {key!r} is not in the benchmark table ({len(self.rows)} rows, key "
                f"column {self.key_column!r})"
            ) from None

    def best(self, metric: str, maximize: bool = True) -> tuple[str, float]:
        self.check_columns(metric)
        finite = [(k, r[metric]) for k, r in self.rows.items() if math.isfinite(r[metric])]
        key, value = (max if maximize else min)(finite, key=lambda kv: kv[1])
        return key, value


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan
