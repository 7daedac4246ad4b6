"""End to end: a Hydra app we did not write, swept by ``hydra/sweeper=nas`` over its own keys."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import predict_in_new_process, run_app, run_app_in_process

pytestmark = pytest.mark.e2e

# A training app as a user already has it; the only NAS-specific line is nas_plugin.log_model.
APP = """
import math

import hydra
import mlflow
import torch
from omegaconf import DictConfig

import nas_plugin


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig):
    if cfg.model.act == "crash":
        raise RuntimeError("the model exploded")
    if cfg.model.act == "nan":
        return {"score": math.nan}
    if cfg.model.act == "text":
        return "not a metric"
    width = cfg.model.width
    depth = cfg.model.get("depth", 1) if cfg.model.family == "mlp" else 1
    layers = [torch.nn.Flatten(), torch.nn.Linear(4, width), torch.nn.ReLU()]
    layers += [torch.nn.Linear(width, width) for _ in range(depth - 1)]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 3))
    for step in range(3):
        mlflow.log_metric("train_loss", 1.0 / (step + 1), step=step)
    if cfg.log_model:
        nas_plugin.log_model(model, torch.zeros(2, 4))
    score = -((width - 32) ** 2) / 256 - abs(depth - 2) + cfg.optim.lr
    return {"score": score, "params": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - _self_
model: {{family: mlp, width: 8, depth: 1, act: relu}}
optim: {{lr: 0.01}}
log_model: {log_model}
hydra:
  sweeper:
    n_trials: {n_trials}
    seed: {seed}
    max_failures: {max_failures}
    objective: {{metric: score, direction: maximize}}
    mlflow: {{experiment: foreign}}
    registry: {{model_name: foreign-best}}
    params:
{params}
"""

SEARCH = """\
      model.family: [mlp, linear]
      model.depth: {low: 1, high: 3, when: {model.family: mlp}}
"""


def config(
    params: str = SEARCH,
    n_trials: int = 5,
    seed: int = 0,
    max_failures: int = 3,
    log_model: bool = False,
) -> str:
    return CONFIG.format(
        params=params,
        n_trials=n_trials,
        seed=seed,
        max_failures=max_failures,
        log_model=str(log_model).lower(),
    )


def test_foreign_app_trials_land_in_mlflow_and_best_model_is_registered(write_app):
    cwd = write_app(APP, config(log_model=True))
    # A sweep on the command line (Hydra syntax) joins the space; a plain override is fixed.
    result = run_app(cwd, "train.py", "-m", "model.width=choice(16,32,64)", "optim.lr=0.02")
    assert result.proc.returncode == 0, result.output

    parent, children = result.runs("foreign")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["n_trials"] == "5"
    assert parent.data.params["strategy"] == "random"
    assert len(children) == 5
    assert [c.data.tags["nas.trial"] for c in children] == ["0", "1", "2", "3", "4"]
    client = result.client()
    seen = set()
    for child in children:
        tags, params, metrics = child.data.tags, child.data.params, child.data.metrics
        assert child.info.status == "FINISHED" and tags["nas.status"] == "ok"
        assert params["model.family"] in ("mlp", "linear")
        assert params["model.width"] in ("16", "32", "64")
        # A conditional key is a param only where it is active.
        assert ("model.depth" in params) == (params["model.family"] == "mlp")
        assert "score" in metrics and "params" in metrics
        history = client.get_metric_history(child.info.run_id, "train_loss")
        assert [m.step for m in history] == [0, 1, 2]
        arch = json.loads(tags["nas.encoding"])
        seen.add(json.dumps(arch, sort_keys=True))
        files = {a.path for a in client.list_artifacts(child.info.run_id, "trial")}
        assert {"trial/config.yaml", "trial/overrides.txt", "trial/architecture.json"} <= files
        composed = client.download_artifacts(child.info.run_id, "trial/config.yaml")
        assert "lr: 0.02" in open(composed).read()
    assert len(seen) == 5, "an identical candidate was trained twice"

    best = max(children, key=lambda c: c.data.metrics["score"])
    assert parent.data.tags["nas.best_run_id"] == best.info.run_id
    assert parent.data.metrics["best_score"] == pytest.approx(best.data.metrics["score"])
    leaderboard = client.download_artifacts(parent.info.run_id, "leaderboard.csv")
    rows = open(leaderboard).read().splitlines()
    assert rows[0].startswith("rank,trial,status,score")
    assert rows[1].split(",")[1] == best.data.tags["nas.trial"]
    assert "NAS leaderboard" in result.output and "mlflow ui --backend-store-uri" in result.output

    version = client.get_model_version_by_alias("foreign-best", "champion")
    assert version.tags["run_id"] == best.info.run_id
    assert float(version.tags["metric.score"]) == pytest.approx(best.data.metrics["score"])
    # The registered model loads and predicts in a fresh process.
    shape, _ = predict_in_new_process(
        result.tracking_uri, "models:/foreign-best@champion", np.ones((5, 4)), np.zeros(5), cwd
    )
    assert shape == (5, 3)


def test_failing_nan_and_non_numeric_trials_are_recorded_and_the_sweep_goes_on(write_app):
    params = "      model.act: [relu, crash, nan, text, gelu]\n"
    cwd = write_app(APP, config(params=params, n_trials=5, max_failures=3))
    result = run_app_in_process(cwd, "train.py", "-m", "hydra/sweeper/strategy=grid")
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("foreign")
    by_act = {c.data.params["model.act"]: c for c in children}
    assert set(by_act) == {"relu", "crash", "nan", "text", "gelu"}
    for act in ("relu", "gelu"):
        assert by_act[act].data.tags["nas.status"] == "ok"
    for act, message in [
        ("crash", "RuntimeError: the model exploded"),
        ("nan", "score is nan"),
        ("text", "returned 'not a metric'"),
    ]:
        run = by_act[act]
        assert run.info.status == "FAILED"
        assert run.data.tags["nas.status"] == "failed"
        assert message in run.data.tags["nas.error"], run.data.tags["nas.error"]
    assert parent.data.metrics["trials_failed"] == 3
    assert parent.data.metrics["trials_finished"] == 2
    assert "FAILED (RuntimeError: the model exploded)" in result.output


def test_too_many_failures_stop_the_sweep_with_a_clear_message(write_app):
    params = "      model.act: [crash]\n      model.width: [1, 2, 3, 4, 5]\n"
    cwd = write_app(APP, config(params=params, n_trials=5, max_failures=1))
    result = run_app_in_process(cwd, "train.py", "-m")
    assert result.proc.returncode != 0
    assert "2 trials failed, more than hydra.sweeper.max_failures=1" in result.output
    parent, children = result.runs("foreign")
    assert parent.info.status == "FAILED"
    assert len(children) == 2 and all(c.info.status == "FAILED" for c in children)


def test_a_space_smaller_than_the_budget_is_not_trained_twice(write_app):
    cwd = write_app(APP, config(params="      model.width: [8, 16, 32]\n", n_trials=6))
    result = run_app_in_process(cwd, "train.py", "-m")
    assert result.proc.returncode == 0, result.output
    _, children = result.runs("foreign")
    assert sorted(c.data.params["model.width"] for c in children) == ["16", "32", "8"]
    assert "search space is exhausted" in result.output


def test_same_seed_same_candidates_other_seed_other_candidates(write_app):
    def candidates(seed: int, experiment: str) -> list[str]:
        cwd = write_app(APP, config(seed=seed).replace("foreign}", experiment + "}"))
        result = run_app_in_process(
            cwd,
            "train.py",
            "-m",
            "model.width=range(4,64,4)",
            "hydra/sweeper/strategy=evolution",
            "hydra.sweeper.strategy.population_size=2",
            "hydra.sweeper.strategy.sample_size=1",
        )
        assert result.proc.returncode == 0, result.output
        _, children = result.runs(experiment)
        return [c.data.tags["nas.encoding"] for c in children]

    first = candidates(seed=3, experiment="seed-a")
    assert candidates(seed=3, experiment="seed-b") == first
    assert candidates(seed=4, experiment="seed-c") != first


@pytest.mark.parametrize(
    "params, args, message",
    [
        ("      model.act: []\n", [], "search space key 'model.act': choices=[]; need a non-empty"),
        ("      model.width: {low: 64, high: 8}\n", [], "'model.width': low=64 > high=8"),
        (
            "      optim.lr: {low: 0.0, high: 0.1, log: true}\n",
            [],
            "'optim.lr': log scale needs low > 0, got low=0.0",
        ),
        (
            "      model.widht: [8, 16]\n",
            [],
            "search space key 'model.widht' is not a key of the app's config",
        ),
        (
            "      model.depth: {low: 1, high: 3, when: {model.kind: mlp}}\n",
            [],
            "its condition names 'model.kind', which is not a parameter of this space",
        ),
        (
            SEARCH,
            ["hydra.sweeper.strategy.name=annealing"],
            "hydra.sweeper.strategy.name='annealing' is unknown",
        ),
        (
            SEARCH,
            ["hydra.sweeper.objective.direction=up"],
            "hydra.sweeper.objective.direction='up'; allowed: ['maximize', 'minimize']",
        ),
        (
            SEARCH,
            ["hydra.sweeper.mlflow.tracking_uri=http://127.0.0.1:9"],
            "MLflow tracking store 'http://127.0.0.1:9' (hydra.sweeper.mlflow.tracking_uri) "
            "cannot be reached",
        ),
        (
            SEARCH,
            ["hydra/sweeper/estimator=low_fidelity"],
            "estimator key 'train.epochs' is not a key of the app's config",
        ),
    ],
)
def test_invalid_input_stops_before_any_trial(write_app, params, args, message):
    cwd = write_app(APP, config(params=params))
    result = run_app_in_process(cwd, "train.py", "-m", *args)
    assert result.proc.returncode != 0
    assert message in result.output, result.output
    # Nothing ran: no experiment, no trial directories.
    assert not (cwd / "multirun").exists() or not any((cwd / "multirun").rglob("config.yaml"))
    db = cwd / "mlflow.db"
    if db.exists():
        exp = result.client().get_experiment_by_name("foreign")
        assert exp is None or not result.client().search_runs([exp.experiment_id])


def test_nan_is_not_finite():  # guards the NaN case above against a float parsing change
    assert not math.isfinite(float("nan"))


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"],
    ],
    ids=["joblib", "submitit_local"],
)
def test_trials_in_other_processes_log_the_same_way(write_app, launcher):
    """Trials run in worker processes: nothing the job needs may live only in the sweeper."""
    cwd = write_app(APP, config(n_trials=4, log_model=True))
    result = run_app(cwd, "train.py", "-m", *launcher, "hydra.sweeper.batch_size=2")
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("foreign")
    assert len(children) == 4
    sweeper = parent.data.tags["nas.worker"]
    workers = {c.data.tags["nas.worker"] for c in children}
    assert sweeper not in workers
    for child in children:
        assert child.data.tags["nas.status"] == "ok"
        assert "model.family" in child.data.params and "score" in child.data.metrics
    best = max(children, key=lambda c: c.data.metrics["score"])
    version = result.client().get_model_version_by_alias("foreign-best", "champion")
    assert version.tags["run_id"] == best.info.run_id


def test_credentials_in_the_config_never_reach_mlflow(write_app):
    secrets_config = config(n_trials=2).replace(
        "log_model: false", "log_model: false\ndb: {host: h, password: hunter2, api_key: k-123}"
    )
    cwd = write_app(APP, secrets_config)
    result = run_app_in_process(cwd, "train.py", "-m", "db.password=from-cli-42")
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("foreign")
    client = result.client()
    texts = [
        open(client.download_artifacts(parent.info.run_id, name)).read()
        for name in ("sweep_config.yaml", "command_line_overrides.txt")
    ]
    for child in children:
        for name in ("trial/config.yaml", "trial/overrides.txt"):
            texts.append(open(client.download_artifacts(child.info.run_id, name)).read())
        texts.append(json.dumps(child.data.params))
    blob = "\n".join(texts)
    for secret in ("hunter2", "k-123", "from-cli-42"):
        assert secret not in blob
    assert "password: '***'" in blob and "db.password=***" in blob
    assert "host: h" in blob  # ordinary settings stay readable
