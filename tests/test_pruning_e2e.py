"""End to end: bad trials of a real multirun are stopped early by the pruner, with the basic and
the joblib launcher, and MLflow, the leaderboard and the strategy record them as pruned."""

from __future__ import annotations

import csv

import pytest
from conftest import run_app

pytestmark = pytest.mark.e2e

# A foreign app whose learning curves are fixed by design: quality * (1 - 0.5 ** epoch), so
# every pruning decision below is exact. It reports through nas_plugin's two public entry
# points: the EpochLoop helper and a bare nas_plugin.report() call.
APP = """
import hydra
import mlflow
from omegaconf import DictConfig

import nas_plugin
from nas_plugin.pruning import EpochLoop

QUALITY = {"good": 0.9, "fair": 0.5, "poor": 0.2, "bad": 0.1}


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig):
    quality = QUALITY[cfg.model.quality]
    epochs_done = 0
    if cfg.api == "loop":
        loop = EpochLoop(cfg.epochs)
        for epoch in loop:
            acc = quality * (1 - 0.5**epoch)
            mlflow.log_metric("acc", acc, step=epoch)
            loop.report({"acc": acc, "loss": 1 - acc})
            epochs_done = epoch
    else:
        for epoch in range(1, cfg.epochs + 1):
            acc = quality * (1 - 0.5**epoch)
            mlflow.log_metric("acc", acc, step=epoch)
            epochs_done = epoch
            value = {"acc": acc, "loss": 1 - acc}[cfg.metric]  # the objective, as one number
            if nas_plugin.report(epoch, value, max_step=cfg.epochs):
                break
    return {"acc": acc, "loss": 1 - acc, "epochs_done": epochs_done}


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - override hydra/sweeper/strategy: grid
  - _self_
model: {quality: good, variant: a}
epochs: 8
api: loop
metric: acc
hydra:
  sweeper:
    n_trials: 4
    objective: {metric: acc, direction: maximize}
    mlflow: {experiment: pruned}
    registry: {enabled: false}
"""


def _trials(result, pruned_expected: set[int], budget: int):
    """Check every trial's MLflow record; return the children."""
    parent, children = result.runs("pruned")
    assert parent.info.status == "FINISHED"
    client = result.client()
    assert len(children) == 4
    for child in children:
        number = int(child.data.tags["nas.trial"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "acc")]
        reported = client.get_metric_history(child.info.run_id, "nas.intermediate")
        assert [m.step for m in reported] == steps
        # A pruned run ends FINISHED with its last value; the tags say it was pruned and where.
        assert child.info.status == "FINISHED"
        if number in pruned_expected:
            assert child.data.tags["nas.status"] == "pruned", child.data.tags
            assert max(steps) < budget
            assert child.data.tags["nas.pruned_step"] == str(max(steps))
            assert child.data.tags["nas.prune_reason"]
        else:
            assert child.data.tags["nas.status"] == "ok"
            assert "nas.pruned_step" not in child.data.tags
            assert steps == list(range(1, budget + 1))
        assert child.data.metrics["epochs_done"] == max(steps)
    assert parent.data.metrics["trials_pruned"] == len(pruned_expected)
    assert parent.data.metrics["trials_failed"] == 0
    assert parent.data.params["pruner"] != "none"
    # The leaderboard lists pruned trials after the fully trained ones, marked as such.
    path = client.download_artifacts(parent.info.run_id, "leaderboard.csv")
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    assert {int(r["trial"]) for r in rows if r["status"] == "pruned"} == pruned_expected
    statuses = [r["status"] for r in rows]
    assert statuses == sorted(statuses, key=lambda s: s == "pruned")
    assert "pruned early" in result.output
    return children


@pytest.mark.parametrize(
    ("metric", "direction", "api"), [("acc", "maximize", "loop"), ("loss", "minimize", "report")]
)
def test_asha_stops_bad_trials_with_the_basic_launcher(write_app, metric, direction, api):
    objective = f"{{metric: {metric}, direction: {direction}}}"
    cwd = write_app(APP, CONFIG)
    # Trials in grid order: fair 0.5, poor 0.2, good 0.9, bad 0.1. ASHA, rungs at 1, 2, 4
    # (eta 2; 8 is the budget): poor and bad trail at rung 1 and stop there; good beats fair.
    result = run_app(
        cwd,
        "train.py",
        "-m",
        "hydra/sweeper/pruner=asha",
        "hydra.sweeper.pruner.eta=2",
        f"api={api}",
        f"metric={metric}",
        f"hydra.sweeper.objective={objective}",
        "+hydra.sweeper.params={model.quality: [fair, poor, good, bad]}",
    )
    assert result.proc.returncode == 0, result.output
    children = _trials(result, pruned_expected={1, 3}, budget=8)
    assert {
        c.data.tags["nas.pruned_step"] for c in children if "nas.pruned_step" in c.data.tags
    } == {"1"}
    assert "pruned at step 1" in result.output  # the sweep's progress line


def test_median_stops_bad_trials_with_the_joblib_launcher(write_app):
    cwd = write_app(APP, CONFIG)
    # Two workers, no batch barrier. Trials: good/a, good/b run side by side (equal curves: never
    # below each other's median); bad/a and bad/b start only after a good trial finished, so at
    # step 2 (after one warm-up step) they are below the median and stop.
    result = run_app(
        cwd,
        "train.py",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.batch_size=2",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.min_trials=1",
        "epochs=6",
        "+hydra.sweeper.params={model.quality: [good, bad], model.variant: [a, b]}",
    )
    assert result.proc.returncode == 0, result.output
    children = _trials(result, pruned_expected={2, 3}, budget=6)
    assert [c.data.tags.get("nas.pruned_step") for c in children] == [None, None, "2", "2"]
    # Two worker processes ran the trials.
    assert len({c.data.tags["nas.worker"] for c in children}) == 2
