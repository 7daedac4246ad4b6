"""``tabular``: look a candidate up in a benchmark table instead of training it.

The trial's config is turned into the table's key by an **encoder** (``nb201``: the standard
arch string of the cell at ``prefix``), and the row's numeric columns are the trial's metrics.
A sweep over NAS-Bench-201 then costs milliseconds per trial, which is how NAS methods are
compared on equal footing (NASLib, NAS-Bench-Suite). An architecture the table lacks fails its
trial with a :class:`~nas_plugin.benchmark_table.TableError`.

To add an encoder, add a function ``(job config, prefix) -> key`` to :data:`ENCODERS`.
"""

from __future__ import annotations

import csv
import functools
import gzip
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nas_plugin.benchmark_table import BenchmarkTable, TableError, resolve_table_path
from nas_plugin.estimators.base import Estimator, EstimatorError, reject_unknown
from nas_plugin.space.nb201 import arch_str_from_cell

TAG_TABLE_KEY = "nas.table_key"

Encoder = Callable[[Any, str], str]


def encode_nb201(cfg: Any, prefix: str) -> str:
    """The NB201 arch string of the cell ``{edge_j_i: op}`` at ``prefix`` of the job's config."""
    cell = _select(cfg, prefix)
    if not isinstance(cell, Mapping):
        raise EstimatorError(
            f"hydra.sweeper.estimator.prefix={prefix!r}: the job's config has no NB201 cell "
            f"there (found {cell!r}); set it to the key of the cell's edge_j_i mapping"
        )
    return arch_str_from_cell(cell)


ENCODERS: dict[str, Encoder] = {"nb201": encode_nb201}


@functools.lru_cache(maxsize=8)
def _load_table(
    path: str, key_column: str, mtime_ns: int
) -> tuple[BenchmarkTable, tuple[str, ...]]:
    """The table and its numeric columns, loaded once per process (and again if the file
    changes: ``mtime_ns`` is part of the cache key)."""
    table = BenchmarkTable.load(path, key_column)
    # A column is numeric if some row parses as a number (BenchmarkTable stores text as NaN).
    numeric = tuple(
        name
        for name in table.columns
        if any(not math.isnan(row[name]) for row in table.rows.values())
    )
    return table, numeric


class TabularEstimator(Estimator):
    name = "tabular"

    def __init__(
        self,
        table: str = "nb201_cifar10",
        key_column: str = "arch_str",
        encoder: str = "nb201",
        prefix: str = "model.cell",
        columns: list[str] | None = None,
    ) -> None:
        self.table_name = table
        self.key_column = key_column
        self.encoder = encoder
        self.prefix = prefix
        self.table, numeric = self._load(table, key_column)
        self.columns = self._check_columns(columns, numeric)
        if encoder not in ENCODERS:
            raise EstimatorError(
                f"hydra.sweeper.estimator.encoder={encoder!r} is unknown; allowed: "
                f"{sorted(ENCODERS)}"
            )
        if not isinstance(prefix, str) or not prefix:
            raise EstimatorError(
                f"hydra.sweeper.estimator.prefix={prefix!r} must be a config key such as "
                "'model.cell'"
            )

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> TabularEstimator:
        reject_unknown(cls.name, options, ["table", "key_column", "encoder", "prefix", "columns"])
        return cls(**options)

    @staticmethod
    def _load(table: str, key_column: str) -> tuple[BenchmarkTable, tuple[str, ...]]:
        try:
            path = resolve_table_path(str(table))
        except TableError as err:
            raise EstimatorError(f"hydra.sweeper.estimator.table={table!r}: {err}") from err
        try:
            header = _header(path)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise EstimatorError(
                f"hydra.sweeper.estimator.table={table!r}: {str(path)!r} is not a readable CSV "
                f"or gzipped CSV ({type(err).__name__}: {err})"
            ) from err
        # Checked here (not by BenchmarkTable.load) so the message names the estimator's key.
        if key_column not in header:
            raise EstimatorError(
                f"hydra.sweeper.estimator.key_column={key_column!r} is not a column of table "
                f"{table!r}; its columns are {header}"
            )
        try:
            return _load_table(str(path.resolve()), key_column, path.stat().st_mtime_ns)
        except TableError as err:
            raise EstimatorError(f"hydra.sweeper.estimator.table={table!r}: {err}") from err

    def _check_columns(self, columns: Any, numeric: tuple[str, ...]) -> tuple[str, ...]:
        if columns is None:
            if not numeric:
                raise EstimatorError(
                    f"hydra.sweeper.estimator.table={self.table_name!r} has no numeric column "
                    f"to return as a metric; its columns are {list(self.table.columns)}"
                )
            return numeric
        if (
            isinstance(columns, str)
            or not isinstance(columns, list | tuple)
            or not columns
            or not all(isinstance(c, str) for c in columns)
        ):
            raise EstimatorError(
                f"hydra.sweeper.estimator.columns={columns!r} must be null (every numeric "
                "column) or a non-empty list of column names"
            )
        for column in columns:
            if column not in numeric:
                if column == self.key_column:
                    what = "is the key column"
                elif column in self.table.columns:
                    what = "is not numeric"
                else:
                    what = "does not exist"
                raise EstimatorError(
                    f"hydra.sweeper.estimator.columns: column {column!r} {what} in table "
                    f"{self.table_name!r}; allowed (numeric columns): {list(numeric)}"
                )
        return tuple(columns)

    def key(self, cfg: Any) -> str:
        """The table key of the job's config (see :data:`ENCODERS`)."""
        return ENCODERS[self.encoder](cfg, self.prefix)

    def run_job(self, cfg: Any, task_function: Callable[[Any], Any]) -> dict[str, float]:
        """Look the trial up; ``task_function`` is never called (nothing is trained)."""
        import mlflow  # lazily: validating a sweep config imports every estimator

        key = self.key(cfg)
        # Tagged before the look-up, so a trial that fails on a missing key still shows it.
        if mlflow.active_run() is not None:
            mlflow.set_tag(TAG_TABLE_KEY, key)
        row = self.table.lookup(key)
        return {column: float(row[column]) for column in self.columns}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "table": self.table_name, "encoder": self.encoder}


def _header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        return next(csv.reader(handle), [])


def _select(cfg: Any, key: str) -> Any:
    """``cfg``'s value at the dotted ``key`` (a DictConfig or plain nested mappings)."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    return OmegaConf.select(cfg, key, default=None)
