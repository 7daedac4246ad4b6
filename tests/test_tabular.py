"""The ``tabular`` estimator: a benchmark table look-up in place of training."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_app_in_process
from omegaconf import OmegaConf

from nas_plugin.benchmark_table import PACKAGED, BenchmarkTable, TableError
from nas_plugin.estimators import ESTIMATORS, EstimatorError, make_estimator
from nas_plugin.estimators.tabular import TabularEstimator
from nas_plugin.space import nb201

ESTIMATOR_YAML = REPO / "conf" / "plugin" / "hydra" / "sweeper" / "estimator" / "tabular.yaml"
DEFAULT_CELL = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
    "skip_connect~2|"
)


def job_cfg(arch_str: str, prefix: str = "model.cell") -> Any:
    """A job config holding the cell of ``arch_str`` at ``prefix``, as the sweep composes it."""
    node: Any = dict(zip(nb201.EDGE_KEYS, nb201.from_arch_str(arch_str), strict=True))
    for key in reversed(prefix.split(".")):
        node = {key: node}
    return OmegaConf.create(node)


def never_called(cfg: Any) -> None:
    raise AssertionError("the tabular estimator must not run the task function")


def packaged_row(arch_str: str) -> dict[str, str]:
    """The packaged table's row, read with the csv module (independently of BenchmarkTable)."""
    with gzip.open(PACKAGED["nb201_cifar10"], "rt", newline="") as handle:
        return next(row for row in csv.DictReader(handle) if row["arch_str"] == arch_str)


def write_table(path: Path, rows: list[dict[str, Any]]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def custom_rows() -> list[dict[str, Any]]:
    """Two cells under custom column names, with a text column that is not a metric."""
    return [
        {"cell": DEFAULT_CELL, "top1": 71.5, "ms": 3.25, "note": "default cell"},
        {"cell": nb201.to_arch_str(("none",) * 6), "top1": 10.0, "ms": 0.5, "note": "empty"},
    ]


# -- the packaged table ----------------------------------------------------------------------


def test_packaged_table_returns_the_csv_row_of_a_known_cell() -> None:
    row = packaged_row(DEFAULT_CELL)
    estimator = make_estimator(OmegaConf.to_container(OmegaConf.load(ESTIMATOR_YAML)))
    assert isinstance(estimator, TabularEstimator)
    assert ESTIMATORS["tabular"] is TabularEstimator

    metrics = estimator.run_job(job_cfg(DEFAULT_CELL), never_called)
    assert metrics == {
        "nb201_index": float(row["nb201_index"]),
        "cifar10_test_acc": float(row["cifar10_test_acc"]),
        "lat_ms_gold_6226": float(row["lat_ms_gold_6226"]),
    }
    assert metrics["cifar10_test_acc"] == pytest.approx(93.66)
    assert metrics["lat_ms_gold_6226"] == pytest.approx(15.1792)
    assert all(isinstance(v, float) for v in metrics.values())
    assert estimator.describe() == {"name": "tabular", "table": "nb201_cifar10", "encoder": "nb201"}


def test_columns_select_the_metrics_returned() -> None:
    estimator = TabularEstimator(columns=["cifar10_test_acc"])
    assert estimator.run_job(job_cfg(DEFAULT_CELL), never_called) == {
        "cifar10_test_acc": pytest.approx(93.66)
    }


def test_tables_are_loaded_once_per_process() -> None:
    assert TabularEstimator().table is TabularEstimator(columns=["cifar10_test_acc"]).table


def test_architecture_missing_from_the_table_is_a_clear_table_error(
    tmp_path: Path, custom_rows: list[dict[str, Any]]
) -> None:
    path = write_table(tmp_path / "two.csv", custom_rows)
    estimator = TabularEstimator(table=str(path), key_column="cell")
    missing = nb201.to_arch_str(("nor_conv_1x1",) * 6)
    with pytest.raises(TableError, match=r"is not in the benchmark table \(2 rows, key column"):
        estimator.run_job(job_cfg(missing), never_called)


# -- user tables -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bench.csv", "bench.csv.gz"])
def test_user_table_with_custom_column_names(
    tmp_path: Path, custom_rows: list[dict[str, Any]], name: str
) -> None:
    path = write_table(tmp_path / name, custom_rows)
    estimator = make_estimator(
        {"name": "tabular", "table": str(path), "key_column": "cell", "prefix": "net.arch"}
    )
    # The text column is not numeric, so it is no metric.
    assert estimator.columns == ("top1", "ms")
    metrics = estimator.run_job(job_cfg(DEFAULT_CELL, prefix="net.arch"), never_called)
    assert metrics == {"top1": 71.5, "ms": 3.25}

    only_ms = TabularEstimator(table=str(path), key_column="cell", columns=["ms"])
    assert only_ms.run_job(job_cfg(nb201.to_arch_str(("none",) * 6)), never_called) == {"ms": 0.5}


def test_empty_cells_become_nan_metrics(tmp_path: Path) -> None:
    other = nb201.to_arch_str(("none",) * 6)
    rows = [{"arch_str": DEFAULT_CELL, "acc": "", "ms": 2}, {"arch_str": other, "acc": 50, "ms": 1}]
    path = write_table(tmp_path / "gaps.csv", rows)
    metrics = TabularEstimator(table=str(path)).run_job(job_cfg(DEFAULT_CELL), never_called)
    assert math.isnan(metrics["acc"]) and metrics["ms"] == 2.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"columns": ["cifar10_test_acc", "top5"]},
            "hydra.sweeper.estimator.columns: column 'top5' does not exist in table "
            "'nb201_cifar10'; allowed (numeric columns): ['nb201_index', 'cifar10_test_acc', "
            "'lat_ms_gold_6226']",
        ),
        ({"columns": ["arch_str"]}, "column 'arch_str' is the key column"),
        ({"columns": "cifar10_test_acc"}, "columns='cifar10_test_acc' must be null"),
        ({"columns": []}, "columns=[] must be null"),
        (
            {"key_column": "arch"},
            "hydra.sweeper.estimator.key_column='arch' is not a column of table "
            "'nb201_cifar10'; its columns are ['arch_str', 'nb201_index', 'cifar10_test_acc', "
            "'lat_ms_gold_6226']",
        ),
        ({"encoder": "darts"}, "hydra.sweeper.estimator.encoder='darts' is unknown; allowed: "),
        ({"prefix": ""}, "hydra.sweeper.estimator.prefix='' must be a config key"),
        ({"table": "nope.csv"}, "hydra.sweeper.estimator.table='nope.csv': benchmark table"),
        ({"table": "nb201_imagenet"}, "neither a packaged table (['nb201_cifar10'])"),
        ({"tabel": "nb201_cifar10"}, "estimator 'tabular': unknown option(s) ['tabel']"),
    ],
)
def test_invalid_config_is_refused_when_built(options: dict[str, Any], message: str) -> None:
    with pytest.raises(EstimatorError) as info:
        make_estimator({"name": "tabular", **options})
    assert message in str(info.value)


def test_text_column_and_unreadable_file_are_refused(
    tmp_path: Path, custom_rows: list[dict[str, Any]]
) -> None:
    path = write_table(tmp_path / "t.csv", custom_rows)
    with pytest.raises(EstimatorError, match="column 'note' is not numeric"):
        TabularEstimator(table=str(path), key_column="cell", columns=["note"])
    broken = tmp_path / "broken.csv.gz"
    broken.write_text("arch_str,acc\n")  # not gzipped
    with pytest.raises(EstimatorError, match="is not a readable CSV or gzipped CSV"):
        TabularEstimator(table=str(broken))


def test_prefix_without_a_cell_fails_the_trial_clearly() -> None:
    estimator = TabularEstimator(prefix="model.genotype")
    with pytest.raises(EstimatorError, match="prefix='model.genotype': the job's config has no"):
        estimator.run_job(job_cfg(DEFAULT_CELL), never_called)


# -- end to end: a tabular NB201 sweep through Hydra -----------------------------------------


@pytest.mark.e2e
def test_tabular_nb201_sweep_logs_table_values(tmp_path: Path) -> None:
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra.sweeper.n_trials=12",
    )
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("nas-nb201-tabular")
    assert parent.data.params["estimator.name"] == "tabular"
    assert parent.data.params["strategy"] == "evolution"
    assert len(children) == 12
    table = BenchmarkTable.load("nb201_cifar10")
    keys = set()
    for child in children:
        params, metrics, tags = child.data.params, child.data.metrics, child.data.tags
        assert tags["nas.status"] == "ok"
        values = {f"model.cell.{k}": params[f"model.cell.{k}"] for k in nb201.EDGE_KEYS}
        key = tags["nas.table_key"]
        assert key == nb201.arch_str_from_values(values)
        assert metrics["cifar10_test_acc"] == pytest.approx(table.lookup(key)["cifar10_test_acc"])
        assert metrics["lat_ms_gold_6226"] == pytest.approx(table.lookup(key)["lat_ms_gold_6226"])
        assert params["estimator.table"] == "nb201_cifar10"
        keys.add(key)
    assert len(keys) == 12  # never the same cell twice
    best = max(c.data.metrics["cifar10_test_acc"] for c in children)
    assert parent.data.metrics["best_cifar10_test_acc"] == pytest.approx(best)
    assert result.client().search_registered_models() == []


@pytest.mark.e2e
def test_cells_missing_from_a_user_table_fail_their_trials(
    tmp_path: Path, custom_rows: list[dict[str, Any]]
) -> None:
    path = write_table(tmp_path / "two.csv.gz", custom_rows)
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/strategy=random",
        f"hydra.sweeper.estimator.table={path}",
        "hydra.sweeper.estimator.key_column=cell",
        "hydra.sweeper.objective.metric=top1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.max_failures=-1",
    )
    assert result.proc.returncode == 0, result.output
    _, children = result.runs("nas-nb201-tabular")
    assert len(children) == 2
    failed = [c for c in children if c.data.tags["nas.status"] == "failed"]
    # A random cell is one of the table's two with odds 2 in 15,625 per trial.
    assert failed
    for child in failed:
        tags = child.data.tags
        assert tags["nas.table_key"] not in (row["cell"] for row in custom_rows)
        assert "TableError: architecture '|" in tags["nas.error"]
        assert "is not in the benchmark table (2 rows" in tags["nas.error"]
