"""Fault injection: each fault ends as a recorded failed trial (the sweep goes on) and no
finished trial's result is lost."""

from __future__ import annotations

import pytest
from conftest import run_app

pytestmark = pytest.mark.e2e

APP = """
import os
import signal
import time

import hydra

from nas_plugin.estimators import ESTIMATORS
from nas_plugin.estimators.full import FullTraining


class ModelAtTheEnd(FullTraining):
    # Logs the best trial's model at the end of the sweep (as estimator=supernet does), and
    # fails there, as a store or an export may.
    name = "model_at_the_end"

    def log_best_model(self, cfg):
        raise RuntimeError("export broke")


ESTIMATORS[ModelAtTheEnd.name] = ModelAtTheEnd


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    if cfg.fault == "hang":
        time.sleep(600)  # stands for a stuck data loader or a deadlock
    if cfg.fault == "oom":
        bytearray(1 << 50)  # a guarded allocation of 1 PiB: MemoryError, not a dead machine
    if cfg.fault == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # the worker process is killed mid-trial
    if cfg.fault == "raise":
        raise ValueError("bad batch")
    return {"score": float(len(cfg.fault))}


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - override hydra/sweeper/strategy: grid
  - _self_
fault: none
hydra:
  sweeper:
    max_failures: -1
    trial_timeout: 5
    objective: {metric: score}
    mlflow: {experiment: faults}
"""


def _outcomes(result) -> dict[str, tuple[str, str, str]]:
    _, children = result.runs("faults")
    return {
        c.data.params["fault"]: (
            c.info.status,
            c.data.tags["nas.status"],
            c.data.tags.get("nas.error", ""),
        )
        for c in children
    }


def test_hang_oom_and_exceptions_fail_their_trial_only(write_app):
    cwd = write_app(APP, CONFIG)
    result = run_app(
        cwd,
        "train.py",
        "-m",
        "fault=choice(none,hang,oom,raise,after)",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.estimator.name=model_at_the_end",
        "+log_model=true",
    )
    assert result.proc.returncode == 0, result.output
    outcomes = _outcomes(result)
    assert outcomes["none"][:2] == ("FINISHED", "ok")
    assert outcomes["after"][:2] == ("FINISHED", "ok")  # the sweep went on after the faults
    assert outcomes["hang"][:2] == ("FAILED", "failed")
    assert "ran past hydra.sweeper.trial_timeout=5s" in outcomes["hang"][2]
    assert outcomes["oom"][:2] == ("FAILED", "failed")
    assert "MemoryError" in outcomes["oom"][2]
    assert "ValueError: bad batch" in outcomes["raise"][2]
    # Logging the best trial's model failed at the end: a warning, the sweep and its results
    # stand, and the best trial's run (resumed for the model) is back to FINISHED.
    parent, children = result.runs("faults")
    (best,) = [c for c in children if c.data.params["fault"] == "after"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["nas.best_run_id"] == best.info.run_id
    client = result.client()
    assert "leaderboard.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    trial = best.data.tags["nas.trial"]
    assert f"Could not log the model of trial {trial}" in result.output
    assert "RuntimeError: export broke" in result.output
    assert client.search_registered_models() == []


def test_a_killed_worker_fails_its_trial_and_keeps_its_neighbours(write_app):
    cwd = write_app(APP, CONFIG)
    result = run_app(
        cwd,
        "train.py",
        "-m",
        "fault=choice(none,die,after,late)",
        "hydra.sweeper.n_trials=4",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.batch_size=2",
        # No time limit here: a fresh joblib worker's first MLflow call (imports, SQLite schema
        # check) can take seconds on a loaded machine, and this test is about the lost worker.
        "hydra.sweeper.trial_timeout=null",
    )
    assert result.proc.returncode == 0, result.output
    outcomes = _outcomes(result)
    assert outcomes["die"][:2] == ("FAILED", "failed")
    assert "the job was lost" in outcomes["die"][2]
    # The sweep went on: trials launched after the dead worker ran normally.
    assert outcomes["late"][:2] == ("FINISHED", "ok"), outcomes["late"]
    # No finished result is lost: a neighbour whose run completed is booked as ok; one that the
    # dying pool took down with it is recorded as lost, never silently dropped.
    for fault in ("none", "after"):
        status, nas_status, error = outcomes[fault]
        assert (status, nas_status) == ("FINISHED", "ok") or "the job was lost" in error
