"""Parallel trials against the default SQLite store never lose a write."""

from __future__ import annotations

import pytest
from conftest import run_app

pytestmark = pytest.mark.e2e

APP = """
import hydra
import mlflow


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    # Many small writes per trial, from 4 processes at once: the worst case for SQLite.
    for step in range(25):
        mlflow.log_metric("val_acc", cfg.x / 100 + step / 1000, step=step)
        mlflow.log_metric("loss", 1 / (step + 1), step=step)
    return {"val_acc": cfg.x / 100 + 0.024}


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
  launcher: {n_jobs: 4}
  sweeper:
    n_trials: 8
    batch_size: 4
    objective: {metric: val_acc}
    mlflow: {experiment: concurrent}
    params:
      x: {low: 0, high: 99}
"""


def test_four_concurrent_workers_lose_no_metric(write_app):
    cwd = write_app(APP, CONFIG)
    result = run_app(cwd, "train.py", "-m")
    assert result.proc.returncode == 0, result.output
    assert "database is locked" not in result.output
    parent, children = result.runs("concurrent")
    assert len(children) == 8
    assert len({c.data.tags["nas.worker"] for c in children}) > 1
    client = result.client()
    for child in children:
        assert child.data.tags["nas.status"] == "ok"
        for name in ("val_acc", "loss"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, name)]
            assert sorted(steps) == list(range(25)), (name, steps)
    assert parent.data.metrics["trials_finished"] == 8
