"""``nas-plugin proxies correlate``: the correlation report of a real sweep, from a shell."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, clean_env, run_app_in_process
from scipy.stats import kendalltau, spearmanr

from nas_plugin.cli import main

pytestmark = pytest.mark.e2e

EXPERIMENT = "nb201-correlate"


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nas_plugin.cli", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_proxies_correlate_prints_and_logs_the_table_of_a_sweep(tmp_path: Path, capsys) -> None:
    # A real sweep of 5 NB201 cells scored by the packaged CIFAR-10 table (seconds, where
    # training would take a minute); the report rebuilds each trial's digits model (4 channels,
    # 1 cell per stage, as the trial's config says) and correlates its proxies with the table.
    sweep = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/strategy=random",
        "hydra.sweeper.n_trials=5",
        f"hydra.sweeper.mlflow.experiment={EXPERIMENT}",
        "model.channels=4",
        "model.cells_per_stage=1",
    )
    assert sweep.proc.returncode == 0, sweep.output
    parent, trials = sweep.runs(EXPERIMENT)
    uri = ["--tracking-uri", sweep.tracking_uri]

    done = cli(
        tmp_path, "proxies", "correlate", "--experiment", EXPERIMENT, *uri,
        "--metric", "cifar10_test_acc", "--proxies", "synflow", "params,naswot",
        "--batch-size", "32",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == (
        f"Zero-cost proxies vs cifar10_test_acc: 5 trials of sweep {parent.info.run_name!r} "
        f"({EXPERIMENT})"
    )
    assert lines[1].split() == ["proxy", "spearman", "kendall", "s/arch"]
    printed = {}
    for line in lines[2:]:
        name, rho, tau, seconds = line.split()
        printed[name] = (float(rho), float(tau), float(seconds))
    assert list(printed) == ["synflow", "params", "naswot"]

    client = sweep.client()
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "zero_cost")} == {
        "zero_cost/correlation.csv",
        "zero_cost/scores.csv",
        "zero_cost/scatter.png",
    }

    def artifact(path: str) -> Path:
        return Path(client.download_artifacts(parent.info.run_id, path, str(tmp_path)))

    # The logged scores are every trial's, with its trained metric as MLflow stored it; the
    # printed and logged correlations are scipy's on them.
    scores = list(csv.DictReader(io.StringIO(artifact("zero_cost/scores.csv").read_text())))
    assert [r["run_id"] for r in scores] == [t.info.run_id for t in trials]
    truth = [t.data.metrics["cifar10_test_acc"] for t in trials]
    assert [float(r["cifar10_test_acc"]) for r in scores] == pytest.approx(truth)
    table = list(csv.DictReader(io.StringIO(artifact("zero_cost/correlation.csv").read_text())))
    assert [r["proxy"] for r in table] == list(printed)
    for row in table:
        values = [float(r[row["proxy"]]) for r in scores]
        rho, tau = spearmanr(values, truth).statistic, kendalltau(values, truth).statistic
        assert float(row["spearman"]) == pytest.approx(rho)
        assert float(row["kendall"]) == pytest.approx(tau)
        assert printed[row["proxy"]][:2] == pytest.approx((rho, tau), abs=5e-4)
        assert row["trials"] == "5" and float(row["seconds_per_arch"]) > 0
    assert artifact("zero_cost/scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Bad input (in process: the same entry point): a clear error, exit status 2.
    for args, message in [
        (["--experiment", "nope"], "error: experiment 'nope' does not exist"),
        (["--experiment", EXPERIMENT, "--proxies", "magic"], "magic"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["proxies", "correlate", *uri, *args])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
