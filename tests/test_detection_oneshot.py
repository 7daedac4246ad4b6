"""darts, gdas, proxyless and enas on ``search_space=spinenet``: the gated supernet, DARTS's
relaxation, the seeded searches, ENAS's per-key controller and its batch-statistics rewards, the
strategy's checks, and real multiruns whose derived detector is trained as a trial."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from conftest import REPO, run_app_in_process
from omegaconf import OmegaConf

from nas_plugin.hardware.device import Runtime
from nas_plugin.models.spinenet import check_model_config
from nas_plugin.oneshot.enas import ChoiceController
from nas_plugin.oneshot.settings import SearchSettings
from nas_plugin.oneshot.spinenet_darts import Relaxation
from nas_plugin.oneshot.spinenet_enas import batch_statistics, search_spinenet_enas
from nas_plugin.oneshot.spinenet_search import search_spinenet
from nas_plugin.space import SearchSpace, spinenet
from nas_plugin.space.params import parse_param
from nas_plugin.strategies import StrategyError, make_strategy
from nas_plugin.supernets.nb201 import gumbel_hard
from nas_plugin.supernets.spinenet import build_supernet, with_values
from nas_plugin.tasks.detection import DetectionModel
from nas_plugin.tasks.detection_data import load_detection_data

CONF = REPO / "conf"
BASE = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "spinenet.yaml"))
CHOICES = {
    "model.blocks.block_4.level": [2, 3, 4, 5],
    "model.blocks.block_5.type": ["residual", "bottleneck"],
    "model.blocks.block_5.input_2": [1, 2, 3],
    "model.pyramid.fusion": ["none", "top_down", "bidirectional"],
}


def small_data():
    task = OmegaConf.to_container(OmegaConf.load(CONF / "task" / "detection.yaml"))
    task["shapes"]["count"] = 64
    return load_detection_data(task)


def test_gates_keep_the_forward_and_carry_a_gradient_to_every_searched_key() -> None:
    torch.manual_seed(0)
    model = DetectionModel(build_supernet(BASE, 4, 3), 64, torch.zeros(3), torch.ones(3)).eval()
    backbone = model.detector.backbone
    images = torch.rand(2, 3, 64, 64)
    logits = {k: torch.zeros(len(v), requires_grad=True) for k, v in CHOICES.items()}
    hard = {k: gumbel_hard(v, 1.0, torch.Generator().manual_seed(1)) for k, v in logits.items()}
    picked = {k: int(h.detach().argmax()) for k, h in hard.items()}
    args = check_model_config(with_values(BASE, {k: CHOICES[k][i] for k, i in picked.items()}))
    backbone.set_arch(args["blocks"], args["fusion"])
    ungated = model.features(images)
    backbone.gates = {k: h[picked[k]] for k, h in hard.items()}
    gated = model.features(images)
    assert all(torch.equal(ungated[k], gated[k]) for k in gated)  # gates are 1 in value
    sum(p.sum() for p in gated.values()).backward()
    for key, vector in logits.items():
        if key.startswith("model.blocks.block_4") and 4 not in backbone.computing:
            continue  # an unused block's gates get no gradient
        assert vector.grad is not None and vector.grad.abs().sum() > 0, key


@pytest.mark.parametrize("method", ["gdas", "proxyless"])
def test_a_search_follows_its_seed_and_moves_the_logits(method: str) -> None:
    data = small_data()
    settings = SearchSettings(method=method, epochs=1, batch_size=16, arch_lr=0.05)
    runs = [search_spinenet(settings, data, BASE, CHOICES, 64, seed=3) for _ in range(2)]
    assert runs[0].cell == runs[1].cell and runs[0].probs == runs[1].probs
    cell, probs, metrics = runs[0].cell, runs[0].probs[-1], runs[0].metrics
    # Every block's four fields and the fusion; searched keys from the space, others the app's.
    assert len(cell) == 4 * BASE["num_blocks"] + 1
    for key, values in CHOICES.items():
        assert cell[key.removeprefix("model.")] in values
        assert sum(probs[key]) == pytest.approx(1.0)
    assert cell["blocks.block_1.level"] == BASE["blocks"]["block_1"]["level"]
    assert any(abs(p - 1 / len(CHOICES[k])) > 1e-3 for k in CHOICES for p in probs[k])
    assert 0.0 <= metrics["search_derived_val_map_50"] <= 1.0
    assert metrics["search_arch_loss"] > 0 and metrics["search_train_loss"] > 0
    assert spinenet.from_arch_str(spinenet.to_arch_str(cell)) == cell


def test_every_one_shot_strategy_takes_spinenet_and_darts_either_order() -> None:
    space = SearchSpace([parse_param(k, v) for k, v in CHOICES.items()])
    for name in ("darts", "gdas", "proxyless", "enas"):
        strategy = make_strategy({"name": name, "prefix": "model.cell"}, space, 0)
        assert strategy.search_settings()["choices"] == CHOICES
    assert strategy.search_settings()["reward"] == "score"  # enas's auto: mAP@0.5 here
    second = make_strategy({"name": "darts", "prefix": "model.cell", "order": 2}, space, 0)
    assert second.search_settings()["order"] == 2
    with pytest.raises(StrategyError, match="latency_weight=0.5 is not allowed"):
        make_strategy(
            {"name": "proxyless", "prefix": "model.cell", "latency_weight": 0.5}, space, 0
        )


def test_the_relaxation_with_one_hot_weights_computes_the_architecture_they_pick() -> None:
    torch.manual_seed(0)
    space = OmegaConf.load(CONF / "plugin" / "hydra" / "sweeper" / "search_space" / "spinenet.yaml")
    params = OmegaConf.to_container(space.params)
    model = DetectionModel(build_supernet(BASE, 4, 3), 64, torch.zeros(3), torch.ones(3)).eval()
    backbone = model.detector.backbone
    images = torch.rand(2, 3, 64, 64)
    rng = random.Random(0)
    for _ in range(3):
        values = {k: rng.choice(v) for k, v in params.items()}
        args = check_model_config(with_values(BASE, values))
        backbone.set_arch(args["blocks"], args["fusion"])
        one_hot = {
            k: (v, torch.tensor([float(x == values[k]) for x in v])) for k, v in params.items()
        }
        with torch.no_grad():
            picked = model.features(images)
            backbone.relaxation = Relaxation(one_hot)
            relaxed = model.features(images)
            backbone.relaxation = None
        assert all(torch.equal(picked[k], relaxed[k]) for k in picked), values
    # Soft weights: a gradient to every key but block 1's inputs (every offset is the stem).
    logits = {k: torch.zeros(len(v), requires_grad=True) for k, v in params.items()}
    backbone.relaxation = Relaxation({k: (params[k], logits[k].softmax(-1)) for k in params})
    sum(p.sum() for p in model.features(images).values()).backward()
    backbone.relaxation = None
    for key, vector in logits.items():
        moved = vector.grad is not None and float(vector.grad.abs().sum()) > 0
        assert moved != key.startswith("model.blocks.block_1.input"), key


def test_a_darts_search_follows_its_seed_and_moves_the_logits() -> None:
    data = small_data()
    settings = SearchSettings(method="darts", epochs=1, batch_size=16, arch_lr=0.05)
    runs = [search_spinenet(settings, data, BASE, CHOICES, 64, seed=3) for _ in range(2)]
    assert runs[0].cell == runs[1].cell and runs[0].probs == runs[1].probs
    cell, probs, metrics = runs[0].cell, runs[0].probs[-1], runs[0].metrics
    assert len(cell) == 4 * BASE["num_blocks"] + 1
    for key, values in CHOICES.items():
        assert cell[key.removeprefix("model.")] in values
        assert sum(probs[key]) == pytest.approx(1.0)
        assert all(abs(p - 1 / len(values)) > 1e-4 for p in probs[key]), key  # every key learns
    assert 0.0 <= metrics["search_derived_val_map_50"] <= 1.0
    assert metrics["search_arch_loss"] > 0 and metrics["search_train_loss"] > 0
    with pytest.raises(ValueError, match="order=2: gdas on the SpineNet supernet is first order"):
        search_spinenet(SearchSettings(method="gdas", order=2), data, BASE, CHOICES, 64, 3)


def test_a_second_order_darts_search_follows_its_seed_and_steps_unlike_the_first_order() -> None:
    data = small_data()
    settings = SearchSettings(method="darts", order=2, epochs=1, batch_size=16, arch_lr=0.05)
    runs = [search_spinenet(settings, data, BASE, CHOICES, 64, seed=3) for _ in range(2)]
    assert runs[0].cell == runs[1].cell and runs[0].probs == runs[1].probs
    probs, metrics = runs[0].probs[-1], runs[0].metrics
    for key, values in CHOICES.items():
        assert all(abs(p - 1 / len(values)) > 1e-4 for p in probs[key]), key  # every key learns
    assert 0.0 < metrics["search_arch_loss"] < 100.0
    # The unrolled gradient moves the logits elsewhere than the first-order one.
    first = search_spinenet(
        SearchSettings(method="darts", epochs=1, batch_size=16, arch_lr=0.05),
        data, BASE, CHOICES, 64, seed=3,
    )  # fmt: skip
    assert first.probs != runs[0].probs


def test_the_choice_controller_is_a_distribution_over_every_architecture() -> None:
    torch.manual_seed(0)
    sizes = [4, 2, 3]
    controller = ChoiceController(sizes, hidden=16, tanh_constant=2.5, temperature=1.0)
    rows, log_prob, entropy = controller(batch=64, generator=torch.Generator().manual_seed(0))
    assert rows.shape == (64, 3) and all(int(rows[:, k].max()) < n for k, n in enumerate(sizes))
    _, forced, _ = controller(rows=rows)  # teacher forcing gives back the samples' log p
    assert torch.allclose(forced, log_prob, atol=1e-6)
    every = torch.tensor(list(itertools.product(*(range(n) for n in sizes))))
    _, all_log_prob, _ = controller(rows=every)
    assert float(all_log_prob.detach().exp().sum()) == pytest.approx(1.0, abs=1e-5)
    # The greedy architecture is the likeliest step by step; frequencies are per decision.
    assert int(controller.greedy_indices()[0]) == int(controller.logits(0, controller.lstm(
        controller.start)[0]).argmax())  # fmt: skip
    freqs = controller.frequencies(rows)
    assert [len(f) for f in freqs] == sizes and all(sum(f) == pytest.approx(1.0) for f in freqs)


def test_rewards_use_batch_statistics_and_leave_the_running_ones_alone() -> None:
    norm = torch.nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        norm.running_mean.fill_(5.0)
    model = torch.nn.Sequential(norm)
    x = torch.randn(8, 3, 4, 4) * 2 + 1
    with torch.no_grad(), batch_statistics(model):
        inside = model(x)
    assert torch.allclose(inside.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.equal(norm.running_mean, torch.full((3,), 5.0))
    assert not norm.training and norm.momentum == 0.1


def test_an_enas_search_follows_its_seed_and_trains_its_controller() -> None:
    data = small_data()
    settings = SearchSettings(
        method="enas", epochs=1, batch_size=16, controller_steps=3, derive_samples=6, arch_lr=0.05
    )
    logged: list[dict[str, float]] = []
    first = search_spinenet_enas(
        settings, data, BASE, CHOICES, 64, 3, lambda e, m: logged.append(m)
    )
    again = search_spinenet_enas(settings, data, BASE, CHOICES, 64, 3)
    assert first.cell == again.cell and first.probs == again.probs
    timeless = {k: v for k, v in first.metrics.items() if k != "search_seconds"}
    assert timeless == {k: v for k, v in again.metrics.items() if k != "search_seconds"}
    assert len(logged) == 1 and logged[-1] == first.metrics
    cell, probs = first.cell, first.probs[-1]
    assert len(cell) == 4 * BASE["num_blocks"] + 1
    for key, values in CHOICES.items():
        assert cell[key.removeprefix("model.")] in values
        assert sum(probs[key]) == pytest.approx(1.0)
        assert sum(logged[-1][f"prob.{key.removeprefix('model.')}.{v}"] for v in values) == (
            pytest.approx(1.0)
        )
    assert cell["blocks.block_1.level"] == BASE["blocks"]["block_1"]["level"]
    metrics = first.metrics
    assert 0.0 <= metrics["search_mean_child_map_50"] <= 1.0
    assert 0.0 <= metrics["search_derived_val_map_50"] <= 1.0
    # Entropy per decision: above 0, at most the uniform one's mean over the keys' sizes.
    uniform = sum(torch.log(torch.tensor(float(len(v)))) for v in CHOICES.values()) / len(CHOICES)
    assert 0.0 < metrics["search_controller_entropy"] <= float(uniform) + 1e-6
    assert metrics["search_train_loss"] > 0
    assert spinenet.from_arch_str(spinenet.to_arch_str(cell)) == cell


def one_shot_sweep(tmp_path, strategy: str, *options: str):
    """A real multirun of the detection pipeline: ``strategy``'s one search of 1 epoch on 64
    generated images, then its derived detector trained 1 epoch as the only trial; no model
    logged or registered unless ``options`` (last, so they win) say so. Returns the run, the
    search run and the trial, the trial checked to have trained the search's architecture."""
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "detection.py"),
        "-m",
        "task.shapes.count=64",
        "hardware.measure=false",
        "train.epochs=1",
        f"hydra/sweeper/strategy={strategy}",
        "hydra/sweeper/search_space=spinenet",
        "hydra.sweeper.strategy.epochs=1",
        "hydra.sweeper.strategy.batch_size=16",
        "hydra.sweeper.leaderboard_columns=[]",
        "hydra.sweeper.registry.enabled=false",
        "log_model=false",
        *options,
    )
    assert result.proc.returncode == 0, result.output
    client = result.client()
    experiment = client.get_experiment_by_name("nas-detection-shapes")
    (search,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`nas.role` = 'search'"
    )
    assert search.data.params["search.method"] == strategy
    arch = spinenet.from_arch_str(search.data.tags["nas.derived_arch"])
    (trial,) = result.runs("nas-detection-shapes")[1]
    assert trial.data.tags["nas.search_run_id"] == search.info.run_id
    for key, value in arch.items():  # the trial trained the derived architecture
        assert trial.data.params[f"model.{key}"] == str(value), key
    return result, search, trial


@pytest.mark.e2e
def test_a_gdas_sweep_trains_the_derived_detector_and_registers_it(tmp_path) -> None:
    registered = ["hydra.sweeper.registry.enabled=true", "log_model=true"]
    result, search, trial = one_shot_sweep(tmp_path, "gdas", *registered)
    client = result.client()
    stored = {a.path for a in client.list_artifacts(search.info.run_id, "search")}
    assert {"search/genotype.json", "search/probs.json", "search/choices.json"} <= stored
    assert "search_derived_val_map_50" in search.data.metrics
    version = client.get_model_version_by_alias("nas-detection-shapes", "champion")
    assert version.tags["run_id"] == trial.info.run_id


@pytest.mark.e2e
def test_an_enas_sweep_searches_with_its_controller_and_trains_the_derived_detector(
    tmp_path,
) -> None:
    options = [f"hydra.sweeper.strategy.{o}" for o in ("controller_steps=2", "derive_samples=3")]
    _, search, _ = one_shot_sweep(tmp_path, "enas", *options)
    assert search.data.params["search.controller_steps"] == "2"
    metrics = search.data.metrics
    for name in ("search_mean_child_map_50", "search_controller_entropy", "search_baseline"):
        assert name in metrics, name
    # The controller's frequencies of every fusion, summing to one.
    fusions = [metrics[f"prob.pyramid.fusion.{f}"] for f in ("none", "top_down", "bidirectional")]
    assert sum(fusions) == pytest.approx(1.0)


@pytest.mark.e2e
def test_a_darts_sweep_relaxes_the_whole_space_and_trains_the_derived_detector(tmp_path) -> None:
    metrics = one_shot_sweep(tmp_path, "darts")[1].data.metrics
    assert metrics["search_arch_loss"] > 0 and "search_derived_val_map_50" in metrics
    # Every block's level has its softmax weights, summing to one.
    levels = [metrics[f"prob.blocks.block_3.level.{v}"] for v in (2, 3, 4, 5)]
    assert sum(levels) == pytest.approx(1.0)


GPU = pytest.mark.gpu
# On the CPU only second-order DARTS in bf16 (its unrolled step turns autocast off); on CUDA all.
RUNTIME_CASES = [
    pytest.param("cpu", "darts", 2, id="cpu-darts2"),
    *(
        pytest.param("cuda", method, order, marks=GPU, id=f"cuda-{method}{order}")
        for method, order in [
            ("darts", 1),
            ("darts", 2),
            ("gdas", 1),
            ("proxyless", 1),
            ("enas", 1),
        ]
    ),
]


@pytest.mark.parametrize(("device", "method", "order"), RUNTIME_CASES)
def test_a_bf16_detection_search_runs_on_the_runtime(device: str, method: str, order: int) -> None:
    data = small_data()
    settings = SearchSettings(
        method=method, order=order, epochs=1, batch_size=16, controller_steps=2, derive_samples=4
    )
    runtime = Runtime(torch.device(device), "bf16")
    search = search_spinenet_enas if method == "enas" else search_spinenet
    first = search(settings, data, BASE, CHOICES, 64, 3, runtime=runtime)
    again = search(settings, data, BASE, CHOICES, 64, 3, runtime=runtime)
    assert 0.0 < first.metrics["search_train_loss"] < 100.0  # finite in bf16
    assert 0.0 <= first.metrics["search_derived_val_map_50"] <= 1.0
    for key, values in CHOICES.items():
        assert first.cell[key.removeprefix("model.")] in values
    if method in ("gdas", "proxyless", "enas"):  # the same draws (CPU generator) on any device
        assert first.cell == again.cell


def test_an_enas_search_rewarded_by_the_loss_scores_detectors_by_exp_minus_fcos_loss() -> None:
    data = small_data()
    settings = SearchSettings(
        method="enas", epochs=1, batch_size=16, controller_steps=3, derive_samples=4,
        reward="loss",
    )  # fmt: skip
    metrics = search_spinenet_enas(settings, data, BASE, CHOICES, 64, 3).metrics
    assert "search_mean_child_map_50" not in metrics
    assert 0.0 < metrics["search_mean_child_exp_neg_loss"] < 1.0
    assert 0.0 <= metrics["search_derived_val_map_50"] <= 1.0  # scored as ever, on val
