"""No batch barrier: with a parallel launcher, a freed worker starts the next trial at once."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import run_app

pytestmark = pytest.mark.e2e

APP = """
import time

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    # Trial 0 is a slow architecture; the others are quick.
    time.sleep(6.0 if HydraConfig.get().job.num == 0 else 0.2)
    return {"score": float(cfg.x)}


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - override hydra/launcher: joblib
  - _self_
x: 0
hydra:
  launcher: {n_jobs: 2}
  sweeper:
    n_trials: 5
    batch_size: 2
    objective: {metric: score}
    mlflow: {experiment: refill}
    params:
      x: {low: 0, high: 99}
"""


def _by_trial(result):
    _, children = result.runs("refill")
    return {int(c.data.tags["nas.trial"]): c.info for c in children}


def test_a_slow_trial_does_not_hold_back_the_next_candidates(write_app):
    cwd = write_app(APP, CONFIG)
    result = run_app(cwd, "train.py", "-m")
    assert result.proc.returncode == 0, result.output
    trials = _by_trial(result)
    assert sorted(trials) == [0, 1, 2, 3, 4]
    # Trials 2-4 ran on the worker trial 1 freed, while trial 0 was still running.
    for number in (2, 3, 4):
        assert trials[number].start_time < trials[0].end_time, number


def test_refill_batch_keeps_the_barrier(write_app):
    cwd = write_app(APP, CONFIG)
    result = run_app(cwd, "train.py", "-m", "hydra.sweeper.refill=batch")
    assert result.proc.returncode == 0, result.output
    trials = _by_trial(result)
    assert trials[2].start_time >= trials[0].end_time


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
    reason="hydra-ray-launcher is not installed (.ci/run installs it)",
)
def test_ray_launcher_refills_and_trials_log_from_ray_workers(write_app):
    """A local Ray cluster (2 CPUs) started for the sweep: no batch barrier there either."""
    # address=local: a new Ray of our own, even where another cluster runs on this machine.
    ray_config = CONFIG.replace("launcher: joblib", "launcher: ray").replace(
        "launcher: {n_jobs: 2}", "launcher: {ray: {init: {address: local, num_cpus: 2}}}"
    )
    cwd = write_app(APP, ray_config)
    result = run_app(cwd, "train.py", "-m")
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("refill")
    assert sorted(int(c.data.tags["nas.trial"]) for c in children) == [0, 1, 2, 3, 4]
    for child in children:
        assert child.data.tags["nas.status"] == "ok" and "score" in child.data.metrics
    # Trials ran in Ray worker processes, not in the sweeper's.
    assert parent.data.tags["nas.worker"] not in {c.data.tags["nas.worker"] for c in children}
    trials = _by_trial(result)
    for number in (2, 3, 4):
        assert trials[number].start_time < trials[0].end_time, number
