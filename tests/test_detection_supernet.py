"""``estimator=supernet`` on the detection pipeline: the SpineNet weight-sharing supernet, the
detectors extracted from it, and a real multirun whose trials score inherited weights and whose
champion loads from the registry in a new process."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import REPO, boxes_from_registry, run_app_in_process
from omegaconf import OmegaConf

from nas_plugin.estimators.base import EstimatorError
from nas_plugin.estimators.supernet import SupernetEstimator
from nas_plugin.models import build_model
from nas_plugin.space import SearchSpace
from nas_plugin.space.params import parse_param
from nas_plugin.supernets.spinenet import build_supernet, extract, sample_arch
from nas_plugin.tasks.detection import DetectionModel, detection_scores
from nas_plugin.tasks.detection_data import load_detection_data

CONF = REPO / "conf"
BASE = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "spinenet.yaml"))
CHOICES = OmegaConf.to_container(
    OmegaConf.load(CONF / "plugin" / "hydra" / "sweeper" / "search_space" / "spinenet.yaml")
)["params"]


def supernet() -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel(build_supernet(BASE, 4, 3), 64, torch.zeros(3), torch.ones(3))


def test_an_extracted_detector_computes_what_the_supernet_computes_for_it() -> None:
    shared = supernet().eval()
    images = torch.rand(2, 3, 64, 64)
    rng = random.Random(0)
    fusions = set()
    for _ in range(5):
        arch = sample_arch(rng, BASE, CHOICES)
        fusions.add(arch["pyramid"]["fusion"])
        detector = extract(shared, arch)
        # The same architecture as the trial's own builder makes, module for module.
        assert list(detector.state_dict()) == list(build_model(arch, 4, 3).state_dict())
        alone = DetectionModel(detector, 64, torch.zeros(3), torch.ones(3)).eval()
        expected, got = shared.features(images), alone.features(images)
        assert all(torch.equal(expected[k], got[k]) for k in expected)
        head_in = list(got.values())
        assert torch.equal(
            shared.detector.head(head_in)["cls_logits"], alone.detector.head(head_in)["cls_logits"]
        )
    assert len(fusions) > 1


def test_sampled_architectures_vary_only_the_searched_keys_and_follow_the_seed() -> None:
    choices = {"model.blocks.block_2.level": [2, 5], "model.pyramid.fusion": ["none", "top_down"]}
    drawn = [sample_arch(random.Random(3), BASE, choices) for _ in range(2)]
    assert drawn[0] == drawn[1]
    many = [sample_arch(random.Random(s), BASE, choices) for s in range(20)]
    assert {a["blocks"]["block_2"]["level"] for a in many} == {2, 5}
    assert {a["pyramid"]["fusion"] for a in many} == {"none", "top_down"}
    for arch in many:
        assert arch["blocks"]["block_1"] == BASE["blocks"]["block_1"]
        assert arch["channels"] == BASE["channels"]


def test_a_space_with_keys_the_supernet_cannot_share_is_refused() -> None:
    job = OmegaConf.create({"model": BASE, "task": {"name": "shapes"}})
    good = SearchSpace([parse_param("model.blocks.block_5.type", ["residual", "bottleneck"])])
    estimator = SupernetEstimator()
    assert estimator.prepare(good, job)["kind"] == "spinenet"
    assert estimator.choices == {"model.blocks.block_5.type": ["residual", "bottleneck"]}
    for key, values, message in (
        ("model.channels", [16, 32], "shares weights over model.blocks.block_<1..5>"),
        ("model.blocks.block_6.level", [2, 3], "'model.blocks.block_6.level'"),
    ):
        with pytest.raises(EstimatorError, match=message):
            SupernetEstimator().prepare(SearchSpace([parse_param(key, values)]), job)


@pytest.mark.e2e
def test_weight_sharing_sweep_trains_one_supernet_and_registers_a_box_model(tmp_path) -> None:
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "detection.py"),
        "-m",
        "task.shapes.count=80",
        "hardware.measure=false",
        "hydra/sweeper/strategy=random",
        "hydra/sweeper/estimator=supernet",
        "hydra.sweeper.estimator.epochs=1",
        "hydra.sweeper.estimator.batch_size=16",
        "hydra.sweeper.estimator.bn_images=32",
        f"hydra.sweeper.estimator.cache_dir={tmp_path / 'cache'}",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.leaderboard_columns=[]",
    )
    assert result.proc.returncode == 0, result.output
    parent, trials = result.runs("nas-detection-shapes")
    assert parent.data.params["estimator.kind"] == "spinenet"
    client = result.client()
    stored = [a.path for a in client.list_artifacts(parent.info.run_id, "supernet")]
    assert len([p for p in stored if p.endswith(".pt")]) == 1  # trained once for the sweep
    assert sorted(t.data.tags["nas.supernet"] for t in trials) == ["loaded", "loaded", "trained"]
    for trial in trials:
        metrics = trial.data.metrics
        for key in ("val_map_50", "val_map", "test_map_50", "test_map"):
            assert 0.0 <= metrics[key] <= 1.0, key
        assert "train_loss" not in metrics and metrics["eval_seconds"] > 0
    trained = next(t for t in trials if t.data.tags["nas.supernet"] == "trained")
    assert trained.data.metrics["supernet_train_seconds"] > 0

    best = max(trials, key=lambda t: t.data.metrics["val_map_50"])
    version = client.get_model_version_by_alias("nas-detection-shapes", "champion")
    assert version.tags["run_id"] == best.info.run_id
    # Loaded from the registry in a new process, it finds on the val split what its trial
    # scored there on inherited weights.
    task = OmegaConf.to_container(OmegaConf.load(CONF / "task" / "detection.yaml"))
    task["shapes"]["count"] = 80
    data = load_detection_data(task)
    images = torch.stack([data.val[i][0] for i in range(len(data.val))])
    _, predictions = boxes_from_registry(
        result.tracking_uri, "models:/nas-detection-shapes@champion", images, tmp_path
    )
    rescored = detection_scores(predictions, [data.val[i][1] for i in range(len(data.val))])
    assert rescored["map_50"] == pytest.approx(best.data.metrics["val_map_50"], abs=0.01)
