"""ENAS (strategy=enas): the LSTM controller, its REINFORCE step, the search, and a sweep whose
search run's derived cell is trained as a linked trial."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, run_app_in_process, sweep_runs

from nas_plugin.oneshot.enas import Controller, collapse_metrics, reinforce_step
from nas_plugin.oneshot.search import SearchSettings
from nas_plugin.space import nb201
from nas_plugin.space.nb201 import EDGE_KEYS, OPS, from_arch_str
from nas_plugin.strategies import StrategyError, make_strategy

TINY = ["model.channels=4", "train.epochs=1", "hardware.measure=false"]


def test_controller_log_prob_is_the_sampled_cells_and_a_distribution_over_all_cells() -> None:
    torch.manual_seed(0)
    controller = Controller(hidden=16, tanh_constant=2.5, temperature=1.0)
    cells, log_prob, entropy = controller(batch=8, generator=torch.Generator().manual_seed(0))
    assert cells.shape == (8, len(EDGE_KEYS)) and log_prob.shape == entropy.shape == (8,)
    # Teacher-forcing the sampled cells gives back their log-probabilities...
    _, forced, _ = controller(cells=cells)
    assert torch.allclose(forced, log_prob, atol=1e-6)
    # ...which are the sum, edge by edge, of log softmax(C tanh(logits / T)) given the earlier
    # choices (computed here by hand from the LSTM).
    inp, state, manual = controller.start.expand(8, -1), None, torch.zeros(8)
    for e in range(len(EDGE_KEYS)):
        state = controller.lstm(inp, state)
        logits = 2.5 * torch.tanh(controller.head(state[0]))
        manual += F.log_softmax(logits, -1).gather(1, cells[:, e : e + 1]).squeeze(1)
        inp = controller.embed(cells[:, e])
    assert torch.allclose(manual, log_prob, atol=1e-5)
    # Over all 5^6 cells the probabilities sum to one: an autoregressive distribution.
    every = torch.tensor(list(itertools.product(range(len(OPS)), repeat=len(EDGE_KEYS))))
    _, all_log_prob, _ = controller(cells=every)
    assert float(all_log_prob.detach().exp().sum()) == pytest.approx(1.0, abs=1e-4)
    # Logits are bounded by the tanh constant: no cell is likelier than with every edge at
    # softmax([C, -C, -C, -C, -C])'s top probability.
    top = F.log_softmax(torch.tensor([2.5] + [-2.5] * 4), -1)[0]
    assert float(all_log_prob.detach().max()) <= len(EDGE_KEYS) * float(top) + 1e-5


def test_reinforce_step_moves_probability_towards_the_rewarded_cell() -> None:
    torch.manual_seed(0)
    controller = Controller()
    settings = SearchSettings(method="enas", entropy_weight=0.0, baseline_decay=0.9)
    optimizer = torch.optim.Adam(controller.parameters(), lr=0.05)
    good = torch.tensor([[OPS.index(op) for op in ("nor_conv_3x3",) * 6]])
    bad = torch.tensor([[OPS.index("none")] * 6])

    def log_p(cell: torch.Tensor) -> float:
        return float(controller(cells=cell)[1].detach())

    before_good, before_bad = log_p(good), log_p(bad)
    baseline = 0.5
    for _ in range(20):  # the rewarded cell, then the unrewarded one, against the baseline
        for cell, accuracy in ((good, 1.0), (bad, 0.0)):
            _, lp, ent = controller(cells=cell)
            reward, baseline = reinforce_step(
                controller, optimizer, lp, ent, accuracy, baseline, settings
            )
            assert reward == accuracy
    assert 0.0 < baseline < 1.0
    assert log_p(good) > before_good + 1.0
    assert log_p(bad) < before_bad - 1.0
    # A reward equal to the baseline (the first one, which starts the baseline) moves nothing.
    state = {k: v.clone() for k, v in controller.state_dict().items()}
    _, lp, ent = controller(cells=good)
    sgd = torch.optim.SGD(controller.parameters(), lr=1.0)
    reward, baseline = reinforce_step(controller, sgd, lp, ent, 0.7, None, settings)
    assert (reward, baseline) == (0.7, 0.7)
    assert all(torch.equal(state[k], v) for k, v in controller.state_dict().items())


def test_controller_samples_are_reproducible_per_seed() -> None:
    def draw(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        controller = Controller()
        return controller(batch=32, generator=torch.Generator().manual_seed(seed))[0]

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_collapse_metrics_count_skip_and_none_edges() -> None:
    cell = ("skip_connect", "none", "skip_connect", "avg_pool_3x3", "none", "nor_conv_1x1")
    assert collapse_metrics(cell) == {
        "search_skip_edges": 2.0,
        "search_none_edges": 2.0,
        "search_skip_none_fraction": 4 / 6,
        "search_collapsed": 1.0,
    }
    assert collapse_metrics(("nor_conv_3x3",) * 6)["search_collapsed"] == 0.0
    assert collapse_metrics(("avg_pool_3x3",) * 6)["search_collapsed"] == 1.0  # no convolution


def test_enas_options_are_checked_by_name() -> None:
    space = nb201.search_space()
    strategy = make_strategy({"name": "enas", "controller_steps": 5, "epochs": 2}, space, 0)
    settings = strategy.search_settings()
    assert (settings["method"], settings["controller_steps"], settings["epochs"]) == ("enas", 5, 2)
    assert settings["lstm_size"] == 64 and settings["tanh_constant"] == 1.1
    assert settings["reward"] == "score"  # auto: the accuracy on NB201, as in ENAS
    for option, value, message in [
        ("baseline_decay", 1.0, "baseline_decay=1.0 must be a number in [0, 1)"),
        ("temperature", 0, "temperature=0 must be a number > 0"),
        ("tanh_constant", -1.0, "tanh_constant=-1.0 must be a number > 0"),
        ("lstm_size", 0, "lstm_size=0 must be a positive integer"),
        ("controller_steps", 2.5, "controller_steps=2.5 must be a positive integer"),
        ("derive_samples", 0, "derive_samples=0 must be a positive integer"),
        ("entropy_weight", -1e-4, "entropy_weight=-0.0001 must be a number >= 0"),
        ("order", 2, "unknown option(s) ['order']"),
        ("reward", "miou", "reward='miou' is not allowed: expected one of auto, score, loss"),
    ]:
        with pytest.raises(StrategyError, match=re.escape(f"strategy 'enas': {message}")):
            make_strategy({"name": "enas", option: value}, space, 0)


def test_enas_search_is_reproducible_per_seed() -> None:
    from nas_plugin.oneshot.data import vision_data
    from nas_plugin.oneshot.search import search
    from nas_plugin.tasks.vision_data import task_key

    torch.set_num_threads(1)
    task = {"name": "digits", "dataset": "digits", "resolution": 16, "val_fraction": 0.15,
            "test_fraction": 0.15, "split_seed": 0}  # fmt: skip
    data, preprocess = vision_data(task_key(task), 1.0, 0)
    settings = SearchSettings(method="enas", epochs=1, controller_steps=4, derive_samples=8)
    logged: list[dict[str, float]] = []
    first = search(settings, data, preprocess, 4, 1, 16, 5, lambda _, m: logged.append(m))
    again = search(settings, data, preprocess, 4, 1, 16, 5)
    assert first.arch_str == again.arch_str and first.alphas == again.alphas
    seconds = {"search_seconds"}
    assert {k: v for k, v in first.metrics.items() if k not in seconds} == {
        k: v for k, v in again.metrics.items() if k not in seconds
    }
    assert logged == [first.metrics]
    # The op distribution per edge sums to one; entropy is per decision (uniform: ln 5).
    for e in range(len(EDGE_KEYS)):
        assert sum(first.alphas[-1][e]) == pytest.approx(1.0)
    assert 0.0 < first.metrics["search_controller_entropy"] <= 1.6095
    assert 0.0 <= first.metrics["search_mean_reward"] <= 1.0
    by_loss = search(replace(settings, reward="loss"), data, preprocess, 4, 1, 16, 5)
    assert 0.0 < by_loss.metrics["search_mean_child_exp_neg_loss"] < 1.0
    assert "search_mean_child_accuracy" not in by_loss.metrics


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)], ids=["cpu", "cuda"]
)
def test_enas_search_runs_in_bf16_on_the_runtime(device: str) -> None:
    from nas_plugin.hardware.device import Runtime
    from nas_plugin.oneshot.data import vision_data
    from nas_plugin.oneshot.search import search
    from nas_plugin.tasks.vision_data import task_key

    task = {"name": "digits", "dataset": "digits", "resolution": 16, "val_fraction": 0.15,
            "test_fraction": 0.15, "split_seed": 0}  # fmt: skip
    data, preprocess = vision_data(task_key(task), 1.0, 0)
    settings = SearchSettings(method="enas", epochs=1, controller_steps=2, derive_samples=4)
    runtime = Runtime(torch.device(device), "bf16")
    result = search(settings, data, preprocess, 4, 1, 16, 0, runtime=runtime)
    assert from_arch_str(result.arch_str) == result.ops
    assert 0.0 < result.metrics["search_train_loss"] < 10.0  # finite in bf16
    assert 0.0 <= result.metrics["search_derived_val_accuracy"] <= 1.0


@pytest.mark.e2e
def test_enas_sweep_search_run_then_derived_trial(tmp_path: Path) -> None:
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/strategy=enas",
        "hydra.sweeper.strategy.epochs=2",
        "hydra.sweeper.strategy.controller_steps=3",
        "hydra.sweeper.strategy.derive_samples=5",
        "hydra/sweeper/estimator=full",
        "hydra.sweeper.objective.metric=val_accuracy",
        "hydra.sweeper.leaderboard_columns=[]",
        "hydra.sweeper.mlflow.experiment=enas",
        "model.cells_per_stage=1",
        *TINY,
    )
    assert result.proc.returncode == 0, result.output
    client = result.client()
    parent, searches, trials = sweep_runs(client, "enas")
    assert len(searches) == 1 and len(trials) == 1, result.output
    search_run, trial = searches[0], trials[0]
    assert search_run.info.status == "FINISHED"
    assert search_run.data.tags["nas.strategy"] == "enas"
    assert search_run.data.params["search.controller_steps"] == "3"
    ops = from_arch_str(search_run.data.params["derived_arch"])
    # Per epoch: the controller's entropy, mean reward and per-edge op distribution...
    run_id = search_run.info.run_id
    for name in ("search_controller_entropy", "search_mean_reward", "alpha.edge_2_1.none"):
        assert [m.step for m in client.get_metric_history(run_id, name)] == [1, 2], name
    for key in EDGE_KEYS:
        total = sum(search_run.data.metrics[f"alpha.{key}.{op}"] for op in OPS)
        assert total == pytest.approx(1.0, abs=1e-5)
    # ...and whether the derived cell collapsed.
    metrics = search_run.data.metrics
    assert metrics["search_skip_none_fraction"] == pytest.approx(
        sum(op in ("skip_connect", "none") for op in ops) / 6
    )
    assert metrics["search_collapsed"] in (0.0, 1.0)
    # The derived cell was trained from scratch as the sweep's trial; the runs are linked.
    assert trial.data.tags["nas.status"] == "ok"
    assert tuple(trial.data.params[f"model.cell.{k}"] for k in EDGE_KEYS) == ops
    assert trial.data.tags["nas.search_run_id"] == run_id
    assert client.get_run(run_id).data.tags["nas.derived_run_id"] == trial.info.run_id
    assert parent.data.tags["nas.best_run_id"] == trial.info.run_id


@pytest.mark.e2e
def test_bad_enas_option_stops_the_sweep_before_any_search(tmp_path: Path) -> None:
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/strategy=enas",
        "hydra.sweeper.strategy.baseline_decay=1.5",
        "hydra.sweeper.mlflow.experiment=enas-bad",
        *TINY,
    )
    assert result.proc.returncode != 0
    assert "strategy 'enas': baseline_decay=1.5 must be a number in [0, 1)" in result.output
    assert not (tmp_path / "multirun").exists() or not list(
        (tmp_path / "multirun").rglob("search-*")
    )
