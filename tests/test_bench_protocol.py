"""The NB201 bench's protocol on a user's own table: search one column, report another; rows
with their own options; the zero-cost warm-up; robustness columns."""

from __future__ import annotations

import csv
import json
import random

import pytest

from nas_plugin.bench.harness import BenchError, parse_row, run_benchmark, warmup_candidates
from nas_plugin.cli import main
from nas_plugin.space import nb201

OPS_VALUE = {"none": 0.0, "skip_connect": 1.0, "nor_conv_1x1": 2.0, "nor_conv_3x3": 3.0}


def _write_table(path, cells: int | None = None) -> dict[str, dict[str, float]]:
    """A made-up benchmark: ``test`` counts ops by weight, ``val`` is ``test`` plus noise, and
    ``proxy`` is ``test`` itself (a perfect zero-cost proxy)."""
    rng = random.Random(0)
    archs = list(nb201.all_arch_strs())
    if cells is not None:
        archs = rng.sample(archs, cells)
    rows = {}
    for arch in archs:
        test = sum(OPS_VALUE.get(op, 0.5) for op in nb201.from_arch_str(arch))
        rows[arch] = {"val": test + rng.gauss(0, 1.0), "test": test, "proxy": test}
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch_str", "val", "test", "proxy"])
        for arch, row in rows.items():
            writer.writerow([arch, row["val"], row["test"], row["proxy"]])
    return rows


def test_search_on_val_and_report_test_on_a_users_table(tmp_path, capsys):
    path = tmp_path / "bench.csv"
    rows = _write_table(path)
    argv = ["bench", "nb201", "--table", str(path), "--metric", "val", "--report", "test"]
    argv += ["--seeds", "3", "--queries", "20", "--strategy", "random", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["metric"], result["report"]) == ("val", "test")
    assert result["optimum"] == 18.0  # the best test value in the table (all conv 3x3)
    tests = {row["test"] for row in rows.values()}
    for stats in result["rows"][0]["best"].values():
        assert stats["p10"] <= stats["median"] <= 18.0
        assert stats["median"] in tests  # a reported value is some cell's test column


def test_reported_value_follows_the_best_cell_by_the_search_metric(tmp_path):
    path = tmp_path / "bench.csv"
    rows = _write_table(path)
    result = run_benchmark(str(path), "val", ["random"], [10], seeds=2, report="test")
    by_test = run_benchmark(str(path), "test", ["random"], [10], seeds=2)
    trace, reference = result.traces[0], by_test.traces[0]
    # Same seeds, same cells: the test value of the best-by-val cell can never beat the best
    # test value among the same cells.
    assert (trace.best <= reference.best + 1e-9).all()
    assert set(trace.best[:, -1].tolist()) <= {row["test"] for row in rows.values()}


def test_a_partial_table_fails_the_missing_cells_instead_of_stopping(tmp_path):
    path = tmp_path / "small.csv"
    _write_table(path, cells=3000)  # a fifth of the cells
    result = run_benchmark(str(path), "test", ["random", "evolution"], [40], seeds=2)
    for trace in result.traces:
        assert trace.best.shape == (2, 40)
        assert (trace.best[:, -1] > 0).all()  # some cells were found in the table


def test_rows_with_their_own_options_run_side_by_side(capsys):
    argv = ["bench", "nb201", "--seeds", "2", "--queries", "12", "--strategy", "local_search"]
    argv += ["--strategy", "local_search[start_samples=3,rank_by=gp]", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [row["strategy"] for row in rows] == [
        "local_search",
        "local_search[start_samples=3,rank_by=gp]",
    ]
    assert rows[1]["options"]["start_samples"] == 3 and rows[1]["options"]["rank_by"] == "gp"
    assert rows[0]["options"]["start_samples"] == 10  # the shipped config's


def test_warmup_queries_the_proxy_best_of_its_pool_first(tmp_path):
    path = tmp_path / "bench.csv"
    _write_table(path)
    row = "random[warmup_pool=200,warmup_keep=5]"
    result = run_benchmark(str(path), "test", ["random", row], [5], seeds=3, proxy="proxy")
    plain, warm = result.traces
    # The proxy is the metric itself: the best of 200 beats the best of 5 random draws.
    assert warm.best[:, -1].min() > plain.best[:, -1].max() - 1e-9
    assert warm.best[:, -1].mean() > plain.best[:, -1].mean()


def test_warmup_candidates_are_seeded_and_ranked():
    def score(encoding):
        return sum(OPS_VALUE.get(v, 0.5) for _, v in encoding)

    first = warmup_candidates(score, seed=1, pool=50, keep=4)
    assert first == warmup_candidates(score, seed=1, pool=50, keep=4)
    assert [score(e) for e in first] == sorted((score(e) for e in first), reverse=True)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--strategy", "bo[initial_samples]"], "must look like option=value"),
        (["--strategy", "random[warmup_pool=5]"], "warmup_pool needs a zero-cost proxy column"),
        (["--proxy", "nope", "--strategy", "random"], "--proxy column 'nope' is not in the table"),
        (["--strategy", "bo[acquisition=pi]"], "acquisition='pi' is unknown"),
    ],
)
def test_bad_rows_are_reported_before_any_query(argv, message, capsys):
    assert main(["bench", "nb201", "--seeds", "1", "--queries", "3", *argv]) == 2
    assert message in capsys.readouterr().err


def test_parse_row():
    assert parse_row("bo") == ("bo", {})
    assert parse_row("bo[features=path, beta=1.5]") == ("bo", {"features": "path", "beta": 1.5})
    with pytest.raises(BenchError):
        parse_row("bo[")


def test_packaged_zero_cost_scores_warm_up_the_nb201_search():
    row = "random[warmup_pool=500,warmup_keep=5]"
    result = run_benchmark(
        "nb201_cifar10",
        "cifar10_test_acc",
        ["random", row],
        [5],
        seeds=4,
        proxy="zc_synflow,zc_naswot",
    )
    plain, warm = result.traces
    # Synflow and NASWOT rank NB201 cells at rho ~0.75: their top 5 of 500 beat 5 random cells.
    assert warm.best[:, -1].mean() > plain.best[:, -1].mean() + 0.3


def test_permuted_table_carries_the_zero_cost_scores_of_the_renamed_cells(tmp_path):
    """The permuted landscape checks the warm-up off CIFAR-10's shape only if its proxy columns
    follow the same renaming as its accuracy."""
    from nas_plugin.bench import transformed_tables
    from nas_plugin.bench.harness import ZERO_COST_TABLE
    from nas_plugin.benchmark_table import BenchmarkTable

    built = BenchmarkTable.load(str(transformed_tables.build(tmp_path / "other.csv.gz")))
    accuracy, zero_cost = BenchmarkTable.load("nb201_cifar10"), BenchmarkTable.load(ZERO_COST_TABLE)
    for arch in random.Random(0).sample(list(nb201.all_arch_strs()), 20):
        renamed = nb201.to_arch_str(
            [transformed_tables.RENAME[op] for op in nb201.from_arch_str(arch)]
        )
        row = built.lookup(arch)
        assert row["permuted_acc"] == accuracy.lookup(renamed)["cifar10_test_acc"]
        assert row["permuted_zc_synflow"] == zero_cost.lookup(renamed)["zc_synflow"]
        assert row["permuted_zc_naswot"] == zero_cost.lookup(renamed)["zc_naswot"]
