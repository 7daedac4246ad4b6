"""End to end: multi-objective sweeps (Pareto front in MLflow and the registry), MnasNet reward,
registry constraints."""

from __future__ import annotations

import pytest
from conftest import assert_plots, run_app_in_process

pytestmark = pytest.mark.e2e

# Accuracy grows with width and depth, latency grows faster: a real trade-off.
APP = """
import hydra
import torch

import nas_plugin


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    width, depth = cfg.net.width, cfg.net.depth
    accuracy = 1.0 - 1.0 / (width * depth) ** 0.5
    latency = 0.05 * width * depth + (2.0 if cfg.net.act == "gelu" else 0.0)
    if cfg.log_model:
        nas_plugin.log_model(torch.nn.Linear(4, 2), torch.zeros(2, 4))
    return {"accuracy": accuracy, "latency_ms": latency}


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - _self_
net: {width: 8, depth: 1, act: relu}
log_model: true
hydra:
  sweeper:
    n_trials: 24
    mlflow: {experiment: objectives}
    registry: {model_name: net}
    params:
      net.width: [4, 8, 16, 32, 64]
      net.depth: {low: 1, high: 4}
      net.act: [relu, gelu]
"""


def _pareto(points):
    """Indices of points not dominated (max accuracy, min latency)."""
    return {
        i
        for i, (acc, lat) in enumerate(points)
        if not any(a >= acc and t <= lat and (a, t) != (acc, lat) for a, t in points)
    }


def test_nsga2_sweep_tags_the_pareto_front_and_registers_every_member(write_app):
    cwd = write_app(APP, CONFIG)
    result = run_app_in_process(
        cwd,
        "train.py",
        "-m",
        "hydra/sweeper/strategy=nsga2",
        "hydra.sweeper.objective.metric=[accuracy,latency_ms]",
        "hydra.sweeper.objective.direction=[maximize,minimize]",
        "hydra.sweeper.registry.pareto=front",
    )
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("objectives")
    assert len(children) == 24
    points = [(c.data.metrics["accuracy"], c.data.metrics["latency_ms"]) for c in children]
    expected_front = _pareto(points)
    tagged = {i for i, c in enumerate(children) if c.data.tags.get("nas.pareto_front") == "true"}
    assert tagged == expected_front
    assert parent.data.metrics["pareto_front_size"] == len(expected_front)
    client = result.client()
    front_csv = open(client.download_artifacts(parent.info.run_id, "pareto_front.csv")).read()
    assert len(front_csv.strip().splitlines()) == len(expected_front) + 1
    versions = client.search_model_versions("name='net'")
    assert {v.tags["run_id"] for v in versions} == {children[i].info.run_id for i in tagged}
    assert all(v.tags["pareto_front"] == "true" for v in versions)
    champion = client.get_model_version_by_alias("net", "champion")
    best = max((children[i] for i in tagged), key=lambda c: c.data.metrics["accuracy"])
    assert champion.tags["run_id"] == best.info.run_id
    # The front, highlighted where people look: accuracy against latency on the parent run.
    assert_plots(client, parent.info.run_id, "trajectory.png", "objective_vs_cost.png")


def test_registry_constraint_picks_the_best_trial_within_a_latency_budget(write_app):
    cwd = write_app(APP, CONFIG)
    result = run_app_in_process(
        cwd,
        "train.py",
        "-m",
        "hydra.sweeper.n_trials=12",
        "hydra.sweeper.objective.metric=accuracy",
        "hydra.sweeper.registry.constraint='latency_ms <= 1.0'",
    )
    assert result.proc.returncode == 0, result.output
    _, children = result.runs("objectives")
    within = [c for c in children if c.data.metrics["latency_ms"] <= 1.0]
    assert within, "the test needs at least one trial within the budget"
    best = max(within, key=lambda c: (c.data.metrics["accuracy"], -int(c.data.tags["nas.trial"])))
    versions = result.client().search_model_versions("name='net'")
    assert len(versions) == 1
    assert versions[0].tags["run_id"] == best.info.run_id
    assert versions[0].tags["constraint"] == "latency_ms <= 1"


def test_mnasnet_reward_trades_accuracy_against_latency(write_app):
    cwd = write_app(APP, CONFIG.replace("log_model: true", "log_model: false"))
    result = run_app_in_process(
        cwd,
        "train.py",
        "-m",
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.objective.metric=accuracy",
        "+hydra.sweeper.objective.reward={cost: latency_ms, target: 1.0, weight: -0.5}",
    )
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("objectives")

    def reward(c):
        m = c.data.metrics
        return m["accuracy"] * (m["latency_ms"] / 1.0) ** -0.5

    best = max(children, key=reward)
    assert parent.data.tags["nas.best_run_id"] == best.info.run_id
    assert parent.data.params["objective.reward"] == "accuracy * (latency_ms / 1.0) ** -0.5"
    assert "reward" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["hydra/sweeper/strategy=nsga2"], "strategy 'nsga2' is multi-objective"),
        (
            ["hydra.sweeper.objective.metric=[accuracy,latency_ms]"],
            "are several objectives: pick a multi-objective strategy",
        ),
        (
            [
                "hydra.sweeper.objective.metric=[accuracy,latency_ms]",
                "hydra.sweeper.objective.direction=[maximize]",
                "hydra/sweeper/strategy=nsga2",
            ],
            "has 1 entries for 2 metrics",
        ),
        (
            ["hydra.sweeper.registry.constraint='latency < fast'"],
            "must look like 'METRIC OP NUMBER'",
        ),
        (
            [
                "hydra.sweeper.objective.metric=accuracy",
                "+hydra.sweeper.objective.reward={cost: latency_ms, target: 0}",
            ],
            "objective.reward.target=0 must be a number > 0",
        ),
    ],
)
def test_bad_objective_config_stops_before_any_trial(write_app, args, message):
    cwd = write_app(APP, CONFIG)
    result = run_app_in_process(cwd, "train.py", "-m", *args)
    assert result.proc.returncode != 0
    assert message in result.output, result.output
