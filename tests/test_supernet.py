"""The NB201 supernet, the one-shot strategies (darts, gdas) and estimator=supernet, end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_app, sweep_runs

from nas_plugin.estimators import EstimatorError, make_estimator
from nas_plugin.models.nb201 import NB201Network
from nas_plugin.space import SearchSpace, nb201
from nas_plugin.space.nb201 import EDGE_KEYS, OPS, from_arch_str
from nas_plugin.strategies import StrategyError, make_strategy
from nas_plugin.supernets.nb201 import NB201Supernet, sample_path

CELL = ("nor_conv_3x3", "none", "avg_pool_3x3", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
TINY = ["model.channels=4", "train.epochs=1", "hardware.measure=false"]


def _randomise_batchnorm(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def test_fixed_architecture_equals_the_standalone_network_with_the_same_weights() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 1, 16, 16)
    supernet = NB201Supernet(channels=4, cells_per_stage=2, num_classes=10, in_chans=1)
    for cell in (CELL, tuple(reversed(CELL)), sample_path(random.Random(3))):
        # Stand-alone -> supernet: its weights copied over, the supernet's other ops untouched.
        standalone = NB201Network(cell, 4, 2, 10, 1)
        _randomise_batchnorm(standalone)
        standalone.eval()
        supernet.load_standalone(standalone)
        supernet.eval()
        with torch.no_grad():
            expected = standalone(x)
            assert torch.allclose(supernet(x, path=cell), expected, atol=1e-6)
            # The same cell as one-hot mixture weights (DARTS's forward at a vertex).
            one_hot = torch.zeros(len(EDGE_KEYS), len(OPS))
            for e, op in enumerate(cell):
                one_hot[e, OPS.index(op)] = 1.0
            assert torch.allclose(supernet(x, weights=one_hot), expected, atol=1e-6)
            # Supernet -> stand-alone: the extracted network predicts the same.
            assert torch.allclose(supernet.extract(cell).eval()(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="exactly one of path"):
        supernet(x)


def test_one_shot_strategies_and_supernet_estimator_reject_bad_config() -> None:
    custom = SearchSpace.from_dict({"model.channels": [4, 8]})
    with pytest.raises(StrategyError, match="search_space=nb201"):
        make_strategy({"name": "darts"}, custom, 0)
    with pytest.raises(StrategyError, match="order=3 must be 1 or 2"):
        make_strategy({"name": "darts", "order": 3}, nb201.search_space(), 0)
    with pytest.raises(StrategyError, match="unknown option"):
        make_strategy({"name": "gdas", "order": 2}, nb201.search_space(), 0)
    with pytest.raises(StrategyError, match="latency_table='/nowhere.json' must be null"):
        make_strategy(
            {"name": "proxyless", "latency_table": "/nowhere.json"}, nb201.search_space(), 0
        )
    with pytest.raises(EstimatorError, match="estimator.epochs=0 must be an integer >= 1"):
        make_estimator({"name": "supernet", "epochs": 0})


# darts (second order, searches=2, resume): tests/test_oneshot.py
@pytest.mark.parametrize(
    ("strategy", "options"),
    [("gdas", ["hydra.sweeper.strategy.latency_weight=0.2"])],
)
def test_search_job_then_derived_architecture_trained_as_a_linked_trial(
    tmp_path: Path, strategy: str, options: list[str]
) -> None:
    result = run_app(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        f"hydra/sweeper/strategy={strategy}",
        "hydra.sweeper.strategy.epochs=1",
        *options,
        "hydra/sweeper/estimator=full",
        "hydra.sweeper.objective.metric=val_accuracy",
        "hydra.sweeper.leaderboard_columns=[]",
        "hydra.sweeper.mlflow.experiment=oneshot",
        *TINY,
    )
    assert result.proc.returncode == 0, result.output
    client = result.client()
    parent, search, trials = sweep_runs(client, "oneshot")
    assert len(search) == 1 and len(trials) == 1, result.output
    search_run, trial = search[0], trials[0]
    arch = search_run.data.params["derived_arch"]
    ops = from_arch_str(arch)  # a valid NB201 string
    assert search_run.data.tags["nas.derived_arch"] == arch
    assert search_run.info.status == "FINISHED"
    # Architecture weights per epoch: every edge's five softmax weights, summing to one.
    for key in EDGE_KEYS:
        total = sum(search_run.data.metrics[f"alpha.{key}.{op}"] for op in OPS)
        assert total == pytest.approx(1.0, abs=1e-5)
    history = client.get_metric_history(search_run.info.run_id, "alpha.edge_1_0.skip_connect")
    assert [m.step for m in history] == [1]
    artifacts = {Path(a.path).name for a in client.list_artifacts(search_run.info.run_id, "search")}
    assert "genotype.json" in artifacts
    if strategy == "gdas":
        assert "latency_lut.json" in artifacts
        assert search_run.data.metrics["search_expected_latency_us"] > 0
    genotype = json.loads(
        Path(
            client.download_artifacts(search_run.info.run_id, "search/genotype.json", str(tmp_path))
        ).read_text()
    )
    assert genotype["arch_str"] == arch
    # The derived cell was trained from scratch as the sweep's trial, and both runs are linked.
    assert trial.data.tags["nas.status"] == "ok"
    assert tuple(trial.data.params[f"model.cell.{k}"] for k in EDGE_KEYS) == ops
    assert 0.0 <= trial.data.metrics["val_accuracy"] <= 1.0
    assert trial.data.tags["nas.search_run_id"] == search_run.info.run_id
    assert client.get_run(search_run.info.run_id).data.tags["nas.derived_run_id"] == (
        trial.info.run_id
    )
    assert parent.data.tags["nas.best_run_id"] == trial.info.run_id


def test_supernet_estimator_trains_once_and_workers_inherit_its_weights(tmp_path: Path) -> None:
    result = run_app(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/strategy=random",
        "hydra/sweeper/estimator=supernet",
        "hydra.sweeper.estimator.epochs=1",
        f"hydra.sweeper.estimator.cache_dir={tmp_path / 'locks'}",
        "hydra.sweeper.objective.metric=val_accuracy",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.batch_size=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.leaderboard_columns=[]",
        "hydra.sweeper.mlflow.experiment=spos",
        "log_model=true",
        "hydra.sweeper.registry.enabled=true",
        *TINY,
    )
    assert result.proc.returncode == 0, result.output
    client = result.client()
    parent, _, trials = sweep_runs(client, "spos")
    assert [t.data.tags["nas.status"] for t in trials] == ["ok"] * 4, result.output
    # Two worker processes started together; the lock let exactly one of them train.
    sources = sorted(t.data.tags["nas.supernet"] for t in trials)
    assert sources == ["loaded", "loaded", "loaded", "trained"]
    assert len({t.data.tags["nas.worker"] for t in trials}) == 2
    names = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "supernet")}
    assert len([n for n in names if n.endswith(".pt")]) == 1
    for trial in trials:
        assert 0.0 <= trial.data.metrics["val_accuracy"] <= 1.0
        assert trial.data.params["estimator.name"] == "supernet"
    # No trial logged a model; the sweeper process (which ran none of them) rebuilt the best
    # candidate from the supernet artifact at the end, logged it into its run, registered it.
    best = parent.data.tags["nas.best_run_id"]
    with_model = [t.info.run_id for t in trials if "nas.model_uri" in t.data.tags]
    assert with_model == [best], result.output
    assert client.get_model_version_by_alias("spos", "champion").tags["run_id"] == best
    assert client.get_run(best).info.status == "FINISHED"


@pytest.mark.parametrize("method", ["gdas", "proxyless"])
def test_latency_term_from_the_cpu_lookup_table_steers_the_search_to_cheap_cells(
    method: str, tmp_path: Path
) -> None:
    from nas_plugin.oneshot.data import vision_data
    from nas_plugin.oneshot.search import SearchSettings, search
    from nas_plugin.tasks.vision_data import task_key

    torch.set_num_threads(1)
    task = {"name": "digits", "dataset": "digits", "resolution": 16, "val_fraction": 0.15,
            "test_fraction": 0.15, "split_seed": 0}  # fmt: skip
    data, preprocess = vision_data(task_key(task), 1.0, 0)
    convs = {}
    for weight in (0.0, 5.0):
        settings = SearchSettings(method=method, epochs=1, arch_lr=0.1, latency_weight=weight)
        result = search(settings, data, preprocess, 4, 1, 16, seed=0)
        convs[weight] = sum(op.startswith("nor_conv") for op in result.ops)
        if weight:
            # Measured here: every operation timed at each stage, convolutions dearer than skip.
            assert set(result.lut) == {"0", "1", "2"}
            assert result.lut["2"]["nor_conv_3x3"] > result.lut["2"]["skip_connect"]
            # A saved table makes the search repeat exactly (measured timings vary run to run).
            table = tmp_path / "latency_lut.json"
            table.write_text(json.dumps(result.lut))
            settings.latency_table = str(table)
            again = search(settings, data, preprocess, 4, 1, 16, seed=0)
            assert again.ops == result.ops and again.lut == result.lut
    assert convs[0.0] > 0 and convs[5.0] == 0, convs
