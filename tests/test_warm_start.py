"""Warm starts: a second sweep starts from what the first one stored in MLflow."""

from __future__ import annotations

import json
import signal

import pytest
import yaml
from conftest import REPO, AppRun, run_app, run_app_in_process

from nas_plugin.objective import parse_objective
from nas_plugin.space import nb201
from nas_plugin.strategies import RegularizedEvolution, make_strategy
from nas_plugin.strategies.warm import WarmStarted
from nas_plugin.sweep.plan import build_plan
from nas_plugin.tracking.warm_start import WarmStartError, load_warm_start

pytestmark = pytest.mark.e2e

# A foreign app whose score we know: wider, deeper and gelu are better.
APP = """
import hydra


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    return cfg.model.width / 10 + cfg.model.depth + (0.5 if cfg.model.act == "gelu" else 0.0)


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - _self_
model: {width: 8, depth: 1, act: relu, norm: batch}
hydra:
  sweeper:
    n_trials: 8
    registry: {enabled: false}
"""

FIRST_SPACE = [
    "model.width=choice(8,16,32,64)",
    "model.depth=range(1,4)",
    "model.act=choice(relu,gelu)",
]


def _sweep(cwd, experiment, *args):
    # The app's trials are one line of arithmetic: in this process, unless other processes run
    # them (joblib) anyway.
    run = run_app if "hydra/launcher=joblib" in args else run_app_in_process
    result = run(cwd, "train.py", "-m", f"hydra.sweeper.mlflow.experiment={experiment}", *args)
    assert result.proc.returncode == 0, result.output
    return result


def _artifact(result, run_id, path, into):
    return json.loads(open(result.client().download_artifacts(run_id, path, str(into))).read())


def _arch(run, keys):
    return {k: run.data.params[k] for k in keys}


def test_best_mode_seeds_the_first_candidates_of_a_related_space(write_app) -> None:
    cwd = write_app(APP, CONFIG)
    first = _sweep(cwd, "src", *FIRST_SPACE)
    src_parent, src_trials = first.runs("src")
    # The new space drops model.act and adds model.norm (and allows a wider model).
    second = _sweep(
        cwd,
        "dst",
        "model.width=choice(8,16,32,64,128)",
        "model.depth=range(1,4)",
        "model.norm=choice(batch,layer)",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.warm_start.experiment=src",
        "hydra.sweeper.warm_start.mode=best",
        "hydra.sweeper.warm_start.top=2",
    )
    parent, trials = second.runs("dst")

    # The two best distinct (width, depth) of the first sweep, best first, are trials 0 and 1.
    by_value = sorted(src_trials, key=lambda r: r.data.metrics["objective"], reverse=True)
    expected, seen = [], set()
    for run in by_value:
        arch = _arch(run, ["model.width", "model.depth"])
        if tuple(arch.values()) not in seen:
            seen.add(tuple(arch.values()))
            expected.append((arch, run.info.run_id))
    for trial, (arch, source_run) in zip(trials[:2], expected[:2], strict=True):
        assert _arch(trial, ["model.width", "model.depth"]) == arch
        assert trial.data.params["model.norm"] in ("batch", "layer")  # filled in
        assert "model.act" not in trial.data.params  # dropped
        assert trial.data.tags["nas.warm_start.source_run"] == source_run
    assert "nas.warm_start.source_run" not in trials[2].data.tags
    assert "keys not in this search space are dropped: ['model.act']" in second.output
    assert "drawn at random: ['model.norm']" in second.output

    params = parent.data.params
    assert params["warm_start.experiment"] == "src"
    assert params["warm_start.mode"] == "best"
    assert params["warm_start.trials"] == "2"
    assert parent.data.tags["nas.warm_start.parent_runs"] == src_parent.info.run_id
    stored = _artifact(second, parent.info.run_id, "warm_start.json", cwd)
    assert [t["run_id"] for t in stored["trials"]] == [run for _, run in expected[:2]]


def test_observations_mode_starts_evolution_from_the_earlier_population(tmp_path) -> None:
    nb201_app = str(REPO / "pipelines" / "vision.py")
    common = ["--config-name", "nb201", "-m", "hydra.sweeper.seed=3"]
    evolution = ["hydra.sweeper.strategy.population_size=5", "hydra.sweeper.strategy.sample_size=3"]
    first = run_app_in_process(
        tmp_path,
        nb201_app,
        *common,
        *evolution,
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.mlflow.experiment=nb201-src",
    )
    assert first.proc.returncode == 0, first.output
    _, src_trials = first.runs("nb201-src")
    second = run_app_in_process(
        tmp_path,
        nb201_app,
        *common,
        *evolution,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.mlflow.experiment=nb201-dst",
        "hydra.sweeper.warm_start.experiment=nb201-src",
    )
    assert second.proc.returncode == 0, second.output
    parent, trials = second.runs("nb201-dst")

    # Every finished trial of the first sweep was told, in the order it ran, with its value.
    assert parent.data.params["warm_start.trials"] == str(len(src_trials)) == "6"
    told = _artifact(second, parent.info.run_id, "warm_start.json", tmp_path)["trials"]
    assert [t["run_id"] for t in told] == [r.info.run_id for r in src_trials]
    assert [t["value"] for t in told] == [r.data.metrics["cifar10_test_acc"] for r in src_trials]

    # With 6 >= population_size observations, evolution mutates at once: the first new cell is
    # one edge away from an earlier cell (a random cell is, by chance, about 1% of the time),
    # and differs from the cold start's first cell.
    def cell(run):
        return tuple(run.data.params[f"model.cell.{edge}"] for edge in nb201.EDGE_KEYS)

    earlier = [cell(r) for r in src_trials]
    new = cell(trials[0])
    assert new not in earlier
    assert min(sum(a != b for a, b in zip(new, old, strict=True)) for old in earlier) == 1
    cold = RegularizedEvolution(
        nb201.search_space(prefix="model.cell"), seed=3, population_size=5, sample_size=3
    ).ask()
    assert new != tuple(v for _, v in cold)

    # Mode best on the same space: the first sweep's best cell is the first trial.
    third = run_app_in_process(
        tmp_path, nb201_app, *common, "hydra.sweeper.n_trials=1",
        "hydra.sweeper.mlflow.experiment=nb201-best",
        "hydra.sweeper.warm_start.experiment=nb201-src", "hydra.sweeper.warm_start.mode=best",
    )  # fmt: skip
    assert third.proc.returncode == 0, third.output
    _, (seeded,) = third.runs("nb201-best")
    best = max(src_trials, key=lambda r: r.data.metrics["cifar10_test_acc"])
    assert cell(seeded) == cell(best)
    assert seeded.data.tags["nas.warm_start.source_run"] == best.info.run_id


ERRORS = [
    (
        ["hydra.sweeper.warm_start.experiment=nope"],
        "hydra.sweeper.warm_start.experiment='nope': no such experiment in sqlite:",
    ),
    (
        ["hydra.sweeper.warm_start.experiment=empty"],
        "hydra.sweeper.warm_start.experiment='empty' has no finished trials",
    ),
    (
        ["hydra.sweeper.warm_start.experiment=src", "model.norm=choice(batch,layer)"],
        "hydra.sweeper.warm_start.mode=observations needs the same search space, but experiment "
        "'src'",
    ),
]


def test_a_bad_warm_start_stops_the_sweep_before_any_trial(write_app) -> None:
    cwd = write_app(APP, CONFIG)
    _sweep(cwd, "src", "hydra.sweeper.n_trials=2", *FIRST_SPACE)
    client = AppRun(cwd, None).client()
    client.create_experiment("empty")
    for args, message in ERRORS:
        result = run_app_in_process(
            cwd, "train.py", "-m", "hydra.sweeper.mlflow.experiment=dst", *FIRST_SPACE, *args
        )
        assert result.proc.returncode != 0, args
        assert message in result.output, result.output
        assert "] trial 0" not in result.output
        dst = client.get_experiment_by_name("dst")
        assert dst is None or not client.search_runs([dst.experiment_id]), args


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"mode": "all"}, "hydra.sweeper.warm_start.mode='all'; allowed: ['observations', 'best']"),
        ({"top": 0}, "hydra.sweeper.warm_start.top=0 must be a positive integer (or null: all)"),
    ],
)
def test_bad_warm_start_options_are_refused_before_the_store_is_read(config, message) -> None:
    space = nb201.search_space(prefix="model.cell")
    objective = parse_objective({"metric": "acc"})
    with pytest.raises(WarmStartError) as err:
        load_warm_start({"experiment": "x", **config}, "sqlite:///unused.db", space, objective, 0)
    assert str(err.value) == message
    assert load_warm_start({"experiment": None}, "sqlite:///unused.db", space, objective, 0) is None


# The same scores, a budget (`epochs`, for Hyperband) that scales them, and a SIGKILL of the
# whole sweep at trial `kill_at` the first time round (the basic launcher runs trials in the
# sweeper's process): a warm-started sweep killed mid-way, at a known point.
KILLABLE_APP = """
import os
import pathlib
import signal

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    marker = pathlib.Path(cfg.kill_marker)
    if cfg.kill_at == HydraConfig.get().job.num and not marker.exists():
        marker.write_text("killed once")
        os.kill(os.getpid(), signal.SIGKILL)
    score = cfg.model.width / 10 + cfg.model.depth + (0.5 if cfg.model.act == "gelu" else 0.0)
    return score * cfg.epochs / 3


if __name__ == "__main__":
    main()
"""

KILLABLE_CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - _self_
model: {width: 8, depth: 1, act: relu}
epochs: 3
kill_marker: killed
kill_at: -1
hydra:
  sweeper:
    n_trials: 6
    registry: {enabled: false}
    params:
      model.width: [8, 16, 32, 64]
      model.depth: {low: 1, high: 4}
      model.act: [relu, gelu]
"""

EVOLUTION = [
    "hydra/sweeper/strategy=evolution",
    "hydra.sweeper.strategy.population_size=3",
    "hydra.sweeper.strategy.sample_size=2",
]


def _encoding(run) -> str:
    return run.data.tags["nas.encoding"]


def test_warm_start_with_a_resume_a_growing_source_hyperband_and_joblib(write_app):
    cwd = write_app(KILLABLE_APP, KILLABLE_CONFIG)
    _, src_first = _sweep(cwd, "src", "hydra.sweeper.n_trials=4").runs("src")

    # 1. Evolution warm-started from src is killed at its trial 3.
    dst = ["-m", "hydra.sweeper.mlflow.experiment=dst", "hydra.sweeper.warm_start.experiment=src"]
    killed = run_app(cwd, "train.py", *dst, *EVOLUTION, "kill_at=3")
    assert killed.proc.returncode == -signal.SIGKILL, killed.output

    # 2. Meanwhile src grows: a Hyperband sweep (3 candidates at 1 epoch, the best at 3),
    # itself warm-started from src's best architecture, which it runs first, at 1 epoch.
    hyperband = _sweep(
        cwd, "src", "hydra.sweeper.n_trials=4", "hydra.sweeper.seed=1",
        "hydra/sweeper/estimator=hyperband", "hydra.sweeper.estimator.budget_key=epochs",
        "hydra.sweeper.estimator.max_budget=3", "hydra.sweeper.estimator.brackets=1",
        "hydra.sweeper.warm_start.experiment=src", "hydra.sweeper.warm_start.mode=best",
    )  # fmt: skip
    client = killed.client()
    src_best = max(src_first, key=lambda r: r.data.metrics["objective"])
    (seeded_hb,) = [
        r
        for r in client.search_runs([src_best.info.experiment_id])
        if r.data.tags.get("nas.warm_start.source_run") == src_best.info.run_id
        and r.data.tags.get("nas.trial") == "0"
    ]
    assert _encoding(seeded_hb) == _encoding(src_best)
    assert seeded_hb.data.params["budget"] == "1" and seeded_hb.data.tags["nas.rung"] == "0"
    assert "1 first candidates from 1 sweep(s)" in hyperband.output
    src = client.get_experiment_by_name("src").experiment_id
    src_runs = [r for r in client.search_runs([src]) if r.data.tags.get("nas.status") == "ok"]
    assert len(src_runs) == 8
    best: dict[str, float] = {}  # each architecture's best value in src
    for run in src_runs:
        best[_encoding(run)] = max(best.get(_encoding(run), -1), run.data.metrics["objective"])

    # 3. The same command resumes dst with the warm start it recorded, not today's src.
    resumed = run_app(cwd, "train.py", *dst, *EVOLUTION, "kill_at=3")
    assert resumed.proc.returncode == 0, resumed.output
    assert "Resuming the unfinished sweep" in resumed.output
    assert "Warm start as the resumed sweep recorded it: 4 observations" in resumed.output
    parent, children = resumed.runs("dst")
    trials = [c for c in children if c.data.tags["nas.status"] == "ok"]
    assert [int(t.data.tags["nas.trial"]) for t in trials] == list(range(6))
    assert parent.data.params["warm_start.trials"] == "4"
    first_src_parent = src_first[0].data.tags["mlflow.parentRunId"]
    assert parent.data.tags["nas.warm_start.parent_runs"] == first_src_parent

    # The candidates are exactly those of an uninterrupted sweep seeded with src's first 4
    # trials: replay the strategy as the sweeper drives it (a known candidate is told again).
    config = yaml.safe_load(
        open(client.download_artifacts(parent.info.run_id, "sweep_config.yaml", str(cwd)))
    )
    plan = build_plan(config, [])
    space = plan.space

    def encode(run):
        return space.encode(json.loads(_encoding(run)))

    def strategy(observations):
        return WarmStarted(make_strategy(plan.strategy_config, space, plan.seed), observations)

    seeded = strategy([(encode(r), r.data.metrics["objective"]) for r in src_first])
    seen: dict = {}
    for trial in trials:
        candidate = seeded.ask()
        while candidate in seen:
            seeded.tell(candidate, seen[candidate])
            candidate = seeded.ask()
        assert candidate == encode(trial), trial.data.tags["nas.trial"]
        seen[candidate] = trial.data.metrics["objective"]
        seeded.tell(candidate, seen[candidate])
    # ... which today's src (8 trials; an architecture met twice, as a Hyperband climb or in
    # both sweeps, counts once) would not give.
    today = load_warm_start(
        {"experiment": "src"}, killed.tracking_uri, space, plan.objective, plan.seed
    )
    assert len(today.observations) == len(best) < 8
    assert today.wrap(make_strategy(plan.strategy_config, space, plan.seed)).ask() != encode(
        trials[0]
    )

    # 4. Joblib, two trials in flight, no batch barrier: the two best architectures of src
    # (both sweeps; by value, Hyperband's 1-epoch trials included) are the first two trials.
    result = _sweep(
        cwd, "async", "hydra.sweeper.warm_start.experiment=src",
        "hydra.sweeper.warm_start.mode=best", "hydra.sweeper.warm_start.top=2",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.batch_size=2",
        "hydra.sweeper.n_trials=4",
    )  # fmt: skip
    parent, trials = result.runs("async")
    assert len({t.data.tags["nas.worker"] for t in trials}) == 2
    assert len({_encoding(t) for t in trials}) == 4
    top2 = sorted(best.values(), reverse=True)[:2]
    by_id = {r.info.run_id: r for r in src_runs}
    for trial in trials[:2]:
        source = by_id[trial.data.tags["nas.warm_start.source_run"]]
        assert encode(source) == encode(trial)
        assert source.data.metrics["objective"] == trial.data.metrics["objective"]
    assert sorted((t.data.metrics["objective"] for t in trials[:2]), reverse=True) == top2
    assert all("nas.warm_start.source_run" not in t.data.tags for t in trials[2:])
    assert parent.data.params["warm_start.trials"] == "2"
