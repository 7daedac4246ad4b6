"""Zero-cost proxies on the dense tasks: the segmentation and detection factories build the
network the trial trains, every proxy scores it, and the zero_cost estimator and pre-screen run
on both pipelines as real multiruns read back from MLflow."""

from __future__ import annotations

import csv
import math
from typing import Any

import pytest
import torch
from conftest import REPO, run_app_in_process
from hydra import compose, initialize_config_dir

from nas_plugin.proxies import PROXIES, score
from nas_plugin.tasks import detection, segmentation
from nas_plugin.tasks.dense_proxy import DetectorProxy, pad_targets, unpad_targets
from nas_plugin.tasks.proxy_factory import proxy_inputs

SEGMENTATION = ["task.scenes.count=120", "hardware.measure=false", "train.num_threads=1"]
DETECTION = ["task.shapes.count=80", "hardware.measure=false", "train.num_threads=1"]


def compose_app(app: str, *overrides: str) -> Any:
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose(app, overrides=list(overrides))


class _Captured(Exception):
    pass


def untrained_state(module: Any, run_trial: Any, cfg: Any, monkeypatch) -> dict:
    """The state of the model ``run_trial(cfg)`` hands to its task's ``train``, untrained."""
    captured: dict[str, torch.Tensor] = {}

    def capture(model: torch.nn.Module, *args: Any) -> None:
        captured.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        raise _Captured

    monkeypatch.setattr(module, "train", capture)
    with pytest.raises(_Captured):
        run_trial(cfg)
    return captured


def test_segmentation_factory_builds_the_trial_network_and_draws_masks(monkeypatch) -> None:
    cfg = compose_app("segmentation", *SEGMENTATION, "seed=3", "model.path.layer_1=down")
    trained = untrained_state(segmentation, segmentation.run_segmentation_trial, cfg, monkeypatch)

    model, inputs, targets = proxy_inputs(cfg, batch_size=8, batches=2, seed=0)
    built = model.state_dict()
    assert list(built) == list(trained)
    assert all(torch.equal(built[k], trained[k]) for k in trained)
    assert [x.shape for x in inputs] == [(8, 3, 32, 32)] * 2  # raw scenes at their native size
    assert [y.shape for y in targets] == [(8, 32, 32)] * 2 and targets[0].dtype == torch.int64
    assert model(inputs[0]).shape == (8, 5, 32, 32)  # per-pixel logits of the 5 classes
    again = proxy_inputs(cfg, 8, 2, seed=0)[1]
    assert all(torch.equal(a, b) for a, b in zip(inputs, again, strict=True))
    assert not torch.equal(proxy_inputs(cfg, 8, 2, seed=1)[1][0], inputs[0])


def test_detection_factory_builds_the_trial_detector_and_its_boxes(monkeypatch) -> None:
    cfg = compose_app("detection", *DETECTION, "seed=3")
    trained = untrained_state(detection, detection.run_detection_trial, cfg, monkeypatch)

    model, inputs, targets = proxy_inputs(cfg, batch_size=4, batches=2, seed=0)
    assert isinstance(model, DetectorProxy)
    built = model.model.state_dict()
    assert list(built) == list(trained)
    assert all(torch.equal(built[k], trained[k]) for k in trained)
    assert [x.shape for x in inputs] == [(4, 3, 64, 64)] * 2
    # Every image's boxes, in the image's pixels, labels 1..4, the rest padding.
    for padded in targets:
        assert padded.shape[0] == 4 and padded.shape[2] == 5
        for boxes in unpad_targets(padded):
            assert len(boxes["labels"]) >= 1
            assert set(boxes["labels"].tolist()) <= {1, 2, 3, 4}
            assert (boxes["boxes"][:, 2:] > boxes["boxes"][:, :2]).all()
            assert boxes["boxes"].min() >= 0 and boxes["boxes"].max() <= 64
    # One value per location of the pyramid: 4 class logits, 4 box offsets, 1 centerness.
    assert model(inputs[0]).shape[::2] == (4, 9)


def test_padded_targets_round_trip_including_an_image_without_boxes() -> None:
    targets = [
        {
            "boxes": torch.tensor([[1.0, 2.0, 5.0, 9.0], [0.0, 0.0, 3.0, 3.0]]),
            "labels": torch.tensor([2, 4]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    padded = pad_targets(targets)
    assert padded.shape == (2, 2, 5)
    for back, original in zip(unpad_targets(padded), targets, strict=True):
        assert torch.equal(back["boxes"], original["boxes"])
        assert torch.equal(back["labels"], original["labels"])


def test_the_detectors_proxy_loss_is_fcos_training_loss() -> None:
    cfg = compose_app("detection", *DETECTION)
    model, inputs, targets = proxy_inputs(cfg, batch_size=4, batches=1, seed=0)
    model.train()  # FCOS computes its losses only in train mode: compare like with like
    torch.manual_seed(0)
    expected = sum(model.model.losses(inputs[0], unpad_targets(targets[0])).values())
    torch.manual_seed(0)
    assert torch.allclose(model.proxy_loss(inputs[0], targets[0]), expected)
    # In eval mode (as the gradient proxies run it, BatchNorm aside) it is still the loss.
    model.eval()
    assert torch.isfinite(model.proxy_loss(inputs[0], targets[0]))


@pytest.mark.parametrize("app", ["segmentation", "detection"])
def test_every_proxy_scores_the_dense_networks_deterministically(app: str) -> None:
    overrides = SEGMENTATION if app == "segmentation" else DETECTION
    model, inputs, targets = proxy_inputs(compose_app(app, *overrides), 8, 1, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = score(model, inputs, targets, list(PROXIES), seed=0)
    assert all(math.isfinite(v) for v in scores.values()), scores
    assert scores["synflow"] > 0 and scores["snip"] > 0 and scores["grad_norm"] > 0
    assert score(model, inputs, targets, ["snip", "naswot"], seed=0) == {
        k: scores[k] for k in ("snip", "naswot")
    }
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_network_without_its_cell_scores_lower_on_segmentation() -> None:
    """A cell whose every edge is 'none' passes nothing on: the gradient proxies see it."""
    full = compose_app("segmentation", *SEGMENTATION)
    empty = compose_app(
        "segmentation",
        *SEGMENTATION,
        *[
            f"model.cell.edge_{j}_{i}=none"
            for j, i in ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
        ],
    )
    values = []
    for cfg in (full, empty):
        model, inputs, targets = proxy_inputs(cfg, 8, 1, seed=0)
        values.append(score(model, inputs, targets, ["synflow"], seed=0)["synflow"])
    assert values[0] > values[1]


@pytest.mark.e2e
def test_zero_cost_sweep_of_the_detection_pipeline_scores_without_training(tmp_path) -> None:
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "detection.py"),
        "-m",
        *DETECTION,
        "hydra/sweeper/strategy=random",
        "hydra/sweeper/estimator=zero_cost",
        "hydra.sweeper.estimator.batch_size=8",
        "hydra.sweeper.estimator.proxies=[synflow,snip]",
        "hydra.sweeper.objective.metric=synflow",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.leaderboard_columns=[]",
        "log_model=false",
    )
    assert result.proc.returncode == 0, result.output
    parent, trials = result.runs("nas-detection-shapes")
    assert parent.data.params["estimator.name"] == "zero_cost"
    assert parent.data.params["estimator.factory"] == "nas_plugin.tasks.proxy_factory:proxy_inputs"
    assert len(trials) == 3
    for trial in trials:
        metrics = trial.data.metrics
        assert trial.data.tags["nas.status"] == "ok"
        assert metrics["synflow"] > 0 and metrics["snip"] > 0 and metrics["params"] > 0
        assert "val_map_50" not in metrics and "train_loss" not in metrics  # nothing trained


@pytest.mark.e2e
def test_segmentation_sweep_trains_only_the_prescreens_top_candidates_by_naswot(tmp_path) -> None:
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "segmentation.py"),
        "-m",
        *SEGMENTATION,
        "train.epochs=1",
        "train.bn_recalibration_images=32",
        "hydra/sweeper/strategy=random",
        "hydra/sweeper/prescreen=zero_cost",
        "hydra.sweeper.prescreen.pool=3",
        "hydra.sweeper.prescreen.keep=1",
        "hydra.sweeper.prescreen.batch_size=8",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.leaderboard_columns=[]",
        "log_model=false",
    )
    assert result.proc.returncode == 0, result.output
    parent, trials = result.runs("nas-segmentation-scenes")
    # proxy: auto (the default) picks the proxy that ranks this task best, not synflow.
    assert parent.data.params["prescreen.proxy"] == "naswot"
    assert parent.data.metrics["prescreen_screened_out"] == 4
    with open(result.client().download_artifacts(parent.info.run_id, "prescreen.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6  # two pools of 3
    kept = {r["run_id"]: r for r in rows if r["kept"] == "True"}
    for round_ in ("0", "1"):
        pool = [r for r in rows if r["round"] == round_]
        best = max(pool, key=lambda r: float(r["proxy"]))
        assert best["kept"] == "True"
    assert len(trials) == 2 and {t.info.run_id for t in trials} == set(kept)
    for trial in trials:
        row = kept[trial.info.run_id]
        assert math.isclose(trial.data.metrics["prescreen_naswot"], float(row["proxy"]))
        assert 0 < trial.data.metrics["val_miou"] <= 1
        assert trial.data.params["model.path.layer_1"] == row["model.path.layer_1"]
