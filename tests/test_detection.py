"""Detection: generated shapes and COCO-json folders, the SpineNet-style FCOS detector, mAP, and
the pipeline as a real multirun read back from MLflow."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from conftest import REPO, boxes_from_registry, run_app_in_process
from omegaconf import OmegaConf
from PIL import Image

from nas_plugin.models import build_model
from nas_plugin.models.spinenet import (
    OUTPUT_LEVELS,
    network_key,
    output_blocks,
    validate_spinenet_space,
)
from nas_plugin.space import SearchSpace
from nas_plugin.space.params import parse_param
from nas_plugin.tasks.detection import (
    DetectionModel,
    detection_scores,
    run_detection_trial,
)
from nas_plugin.tasks.detection_data import (
    SHAPE_CLASSES,
    check_task_config,
    collate,
    generate_shapes,
    load_detection_data,
)

PIPELINE = str(REPO / "pipelines" / "detection.py")
CONF = REPO / "conf"
SPACE = OmegaConf.to_container(
    OmegaConf.load(CONF / "plugin" / "hydra" / "sweeper" / "search_space" / "spinenet.yaml")
)


def shapes_task(**changes) -> dict:
    task = OmegaConf.to_container(OmegaConf.load(CONF / "task" / "detection.yaml"))
    task["shapes"]["count"] = 120
    return {**task, **changes}


def model_config(**changes) -> dict:
    model = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "spinenet.yaml"))
    for key, value in changes.items():
        node = model
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return model


# ---------------------------------------------------------------------------------------------
# Data


def test_shapes_are_the_same_for_a_seed_with_tight_boxes_of_every_class():
    make = generate_shapes.__wrapped__  # uncached: really generated twice
    images, boxes, labels, offsets = make(count=60, size=64, max_objects=4, seed=5)
    again = make(count=60, size=64, max_objects=4, seed=5)
    other_images = make(count=60, size=64, max_objects=4, seed=6)[0]
    assert images.shape == (60, 3, 64, 64) and images.dtype == np.uint8
    for mine, theirs in zip((images, boxes, labels, offsets), again, strict=True):
        assert np.array_equal(mine, theirs)
    assert not np.array_equal(images, other_images)
    counts = np.diff(offsets)
    assert counts.min() >= 1 and counts.max() <= 4 and offsets[-1] == len(boxes) == len(labels)
    assert set(labels.tolist()) == {1, 2, 3, 4}
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert boxes.min() >= 0 and boxes.max() <= 64 and widths.min() >= 3 and heights.min() >= 3
    assert 10 < widths.mean() < 40
    # Tight: each box's border rows and columns differ from the background just outside it
    # (an object's saturated colour vs the gray texture) - checked on the box's centre lines.
    image = images[0].astype(np.float32)
    saturation = image.max(0) - image.min(0)
    for x1, y1, x2, y2 in boxes[offsets[0] : offsets[1]].astype(int):
        row, col = (y1 + y2) // 2, (x1 + x2) // 2
        assert saturation[y1:y2, col].max() > 60 and saturation[row, x1:x2].max() > 60


def test_splits_depend_on_the_task_only_and_flips_mirror_the_boxes():
    task = shapes_task()
    a = load_detection_data(task, 1.0, seed=0)
    b = load_detection_data(task, 0.5, seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (84, 18, 18)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.test.boxes, b.test.boxes)
    assert len(b.train) == 42 and a.class_names == list(SHAPE_CLASSES)
    images, targets = collate([a.train[0], a.train[1]])
    assert images.shape == (2, 3, 64, 64) and len(targets) == 2
    assert targets[0]["boxes"].dtype == torch.float32 and targets[0]["labels"].dtype == torch.int64

    plain_image, plain = a.train[3]
    flipping = a.train.with_flip(True)
    torch.manual_seed(0)
    seen = {bool(torch.equal(flipping[3][0], plain_image)) for _ in range(20)}
    assert seen == {True, False}  # flipped about half the time
    torch.manual_seed(0)
    while torch.equal((flipped := flipping[3])[0], plain_image):
        pass
    image, target = flipped
    assert torch.equal(image, plain_image.flip(-1))
    expected = plain["boxes"].clone()
    expected[:, 0], expected[:, 2] = 64 - plain["boxes"][:, 2], 64 - plain["boxes"][:, 0]
    assert torch.equal(target["boxes"], expected) and torch.equal(target["labels"], plain["labels"])


def write_coco_folder(root, count=12):
    """``count`` images of varying sizes, each with a red rectangle (category id 7, "red") and a
    blue one (category id 3, "blue") at known places; one crowd annotation and one image with
    no objects. Returns (images dir, json path, {file: [(x, y, w, h, category_id)]})."""
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 7, "name": "red"}, {"id": 3, "name": "blue"}],
    }
    truth = {}
    for n in range(count):
        width, height = (40, 30) if n % 2 else (80, 60)
        picture = rng.integers(90, 160, (height, width, 3), dtype=np.uint8)
        objects = []
        if n != 5:  # image 5 has no objects
            for category, colour, (fx, fy) in (
                (7, (230, 20, 20), (0.1, 0.2)),
                (3, (20, 20, 230), (0.55, 0.5)),
            ):
                x, y, w, h = int(fx * width), int(fy * height), width // 4, height // 3
                picture[y : y + h, x : x + w] = colour
                objects.append((x, y, w, h, category))
        name = f"img_{n:02d}.{'jpg' if n % 3 == 0 else 'png'}"
        Image.fromarray(picture).save(images / name, quality=95)
        coco["images"].append({"id": 100 + n, "file_name": name, "width": width, "height": height})
        for k, (x, y, w, h, category) in enumerate(objects):
            coco["annotations"].append(
                {
                    "id": 10 * n + k,
                    "image_id": 100 + n,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                }
            )
        truth[name] = objects
    coco["annotations"].append(
        {"id": 999, "image_id": 100, "category_id": 7, "bbox": [0, 0, 5, 5], "iscrowd": 1}
    )
    path = root / "instances.json"
    path.write_text(json.dumps(coco))
    return images, path, truth


def coco_task(images, annotations, **changes) -> dict:
    task = OmegaConf.to_container(OmegaConf.load(CONF / "task" / "detection_coco.yaml"))
    task.update(images=str(images), annotations=str(annotations), image_size=32, resolution=32)
    task.update(num_workers=0, val_fraction=0.25, test_fraction=0.25)
    return {**task, **changes}


def test_a_coco_folder_is_read_with_boxes_rescaled_and_categories_numbered(tmp_path):
    images, annotations, truth = write_coco_folder(tmp_path)
    data = load_detection_data(coco_task(images, annotations))
    # Category ids in order (3, 7) become labels 1, 2.
    assert data.class_names == ["blue", "red"] and data.num_classes == 2
    assert (len(data.train), len(data.val), len(data.test)) == (6, 3, 3)
    everything = [s[i] for s in (data.train, data.val, data.test) for i in range(len(s))]
    files = [item.path for s in (data.train, data.val, data.test) for item in s.items]
    for path, (image, target) in zip(files, everything, strict=True):
        objects = truth[path.rsplit("/", 1)[1]]
        assert image.shape == (3, 32, 32)
        assert len(target["boxes"]) == len(objects)  # the crowd box is dropped
        width, height = (40, 30) if int(path[-6:-4]) % 2 else (80, 60)
        for box, label, (x, y, w, h, category) in zip(
            target["boxes"].tolist(), target["labels"].tolist(), objects, strict=True
        ):
            sx, sy = 32 / width, 32 / height
            assert box == pytest.approx([x * sx, y * sy, (x + w) * sx, (y + h) * sy], abs=1e-4)
            assert label == {3: 1, 7: 2}[category]
            # The resized image has the rectangle's colour inside the rescaled box.
            x1, y1, x2, y2 = (round(v) for v in box)
            inside = image[:, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].mean(dim=(1, 2))
            channel = 0 if category == 7 else 2
            assert inside[channel] > 0.7 and inside[2 - channel] < 0.3

    # Decoded in two worker processes, batch by batch: the same batches as in this process.
    streamed = load_detection_data(coco_task(images, annotations, num_workers=2))
    for (a, targets_a), (b, targets_b) in zip(
        data.loader(data.train, 4), streamed.loader(streamed.train, 4), strict=True
    ):
        assert torch.equal(a, b)
        assert all(
            torch.equal(x["boxes"], y["boxes"]) for x, y in zip(targets_a, targets_b, strict=True)
        )


def test_coco_errors_name_the_problem(tmp_path):
    images, annotations, _ = write_coco_folder(tmp_path)
    coco = json.loads(annotations.read_text())
    coco["annotations"][0]["category_id"] = 42
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="has category_id 42, which is not in its categories"):
        load_detection_data(coco_task(images, bad))
    (images / "img_04.png").unlink()
    with pytest.raises(FileNotFoundError, match="'img_04.png' .* is not in task.images"):
        load_detection_data(coco_task(images, annotations))
    with pytest.raises(ValueError, match="task.annotations is required for task.dataset=coco"):
        check_task_config({**coco_task(images, annotations), "annotations": "???"})
    with pytest.raises(ValueError, match="task.augment = 'crop' is not allowed: expected one of"):
        check_task_config(shapes_task(augment="crop"))
    with pytest.raises(ValueError, match="task.shapes.max_objects = 0 is not allowed"):
        check_task_config(shapes_task(shapes={**shapes_task()["shapes"], "max_objects": 0}))


def test_a_trial_trains_on_a_written_coco_folder_and_repeats_itself(tmp_path):
    images, annotations, _ = write_coco_folder(tmp_path, count=16)
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "task": coco_task(images, annotations),
            "model": model_config(channels=8),
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.01, "device": "cpu"},
            "hardware": {"measure": False},
        }
    )
    results = run_detection_trial(cfg)
    assert 0.0 <= results["val_map_50"] <= 1.0 and results["epochs"] == 2.0
    assert {"val_map", "test_map_75", "test_mar_100", "train_loss"} <= set(results)
    again = run_detection_trial(cfg)  # same seed, same result
    for key in ("val_map_50", "test_map", "train_loss"):
        assert again[key] == results[key], key


@pytest.mark.gpu
def test_a_trial_trains_on_cuda_in_bf16_with_channels_last():
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "task": shapes_task(),
            "model": model_config(),
            "train": {"epochs": 2, "batch_size": 16, "lr": 0.01, "device": "cuda"},
            "hardware": {"measure": True, "latency_repeats": 2, "latency_warmup": 1},
        }
    )
    results = run_detection_trial(cfg)  # precision and channels_last auto: bf16, on
    assert 0.0 <= results["val_map_50"] <= 1.0 and results["epochs"] == 2.0
    assert math.isfinite(results["train_loss"]) and results["latency_ms"] > 0


# ---------------------------------------------------------------------------------------------
# Model and metric


def sampled_blocks(rng: random.Random) -> dict:
    """A random candidate of the spinenet search space, as the sweeper would set it."""
    model = model_config()
    for key, values in SPACE["params"].items():
        node = model
        *parents, last = key.split(".")[1:]
        for part in parents:
            node = node[part]
        node[last] = rng.choice(values)
    return model


def test_every_sampled_architecture_builds_and_detects():
    rng = random.Random(0)
    extremes = [
        model_config(**{f"blocks.block_{k}.level": 5 for k in range(1, 6)}),
        model_config(**{f"blocks.block_{k}.input_1": 3 for k in range(1, 6)}),
    ]
    for model_cfg in extremes + [sampled_blocks(rng) for _ in range(25)]:
        detector = build_model(model_cfg, num_classes=4, in_chans=3)
        backbone = detector.backbone
        for side in (64, 48, 33):
            features = backbone(torch.rand(2, 3, side, side))
            assert list(features) == [f"p{level}" for level in OUTPUT_LEVELS]
            for level, feature in zip(OUTPUT_LEVELS, features.values(), strict=True):
                size = -(-side // 2**level)
                assert feature.shape == (2, backbone.out_channels, size, size), (level, side)
        model = DetectionModel(detector, 64, torch.full((3,), 0.5), torch.full((3,), 0.25))
        model.train()
        targets = [
            {"boxes": torch.tensor([[4.0, 6.0, 30.0, 28.0]]), "labels": torch.tensor([2])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
        ]
        losses = model.losses(torch.rand(2, 3, 64, 64), targets)
        assert all(torch.isfinite(v) for v in losses.values())
        model.eval()
        with torch.no_grad():
            out = model(torch.rand(3, 3, 40, 40))  # boxes come back in the input's pixels
        assert out.shape == (3, 100, 6)
        kept = out[out[..., 5] >= 0]
        assert kept[:, :4].min() >= 0 and kept[:, :4].max() <= 40
        assert set(kept[:, 5].tolist()) <= {1.0, 2.0, 3.0, 4.0}


def test_inputs_off_the_start_resolve_to_the_stem_and_outputs_fall_back_to_the_last_block():
    model = model_config(**{"blocks.block_1.input_2": 3, "blocks.block_2.input_1": 3})
    backbone = build_model(model, 4, 3).backbone
    assert backbone.inputs[0] == (0,) and backbone.inputs[1] == (0, 1)
    # Levels 2, 5, 5, 5, 5 (the stem is level 2): P2 from block 0, P3 and P4 from the last.
    assert output_blocks([2, 2, 5, 5, 5, 5]) == (1, 5, 5)


def test_bad_model_values_are_named():
    with pytest.raises(ValueError, match="model.blocks.block_2.level = 7 is not allowed: expected"):
        build_model(model_config(**{"blocks.block_2.level": 7}), 4, 3)
    with pytest.raises(ValueError, match="model.blocks.block_6 is not a block of this network"):
        build_model(model_config(**{"blocks.block_6": {"level": 2}}), 4, 3)
    with pytest.raises(ValueError, match="model.blocks.block_1.type = 'dense' is not allowed"):
        build_model(model_config(**{"blocks.block_1.type": "dense"}), 4, 3)
    with pytest.raises(ValueError, match="model.pyramid.fusion = 'zigzag' is not allowed"):
        build_model(model_config(**{"pyramid.fusion": "zigzag"}), 4, 3)
    with pytest.raises(ValueError, match="model.channels = 10 is not allowed: expected a multiple"):
        build_model(model_config(channels=10), 4, 3)
    with pytest.raises(ValueError, match="model.pyramid.channels = 48 is not allowed: expected a"):
        build_model(model_config(**{"pyramid.channels": 48}), 4, 3)


def test_the_space_validator_names_a_bad_searched_value():
    job = OmegaConf.create({"model": model_config()})
    validate_spinenet_space(SearchSpace.from_dict(SPACE["params"]), job)
    bad = SearchSpace([parse_param("model.blocks.block_3.input_1", [1, 4])])
    with pytest.raises(ValueError, match="model.blocks.block_3.input_1=4.*expected one of 1, 2, 3"):
        validate_spinenet_space(bad, job)


def test_map_is_one_for_perfect_predictions_and_falls_with_worse_ones():
    targets = [
        {
            "boxes": torch.tensor([[2.0, 3.0, 20.0, 25.0], [30.0, 30.0, 60.0, 50.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "labels": torch.tensor([2])},
    ]
    names = ["circle", "square", "triangle"]

    def predicted(shift: float = 0.0, relabel: bool = False):
        return [
            {
                "boxes": t["boxes"] + shift,
                "scores": torch.linspace(0.9, 0.8, len(t["labels"])),
                "labels": t["labels"] % 3 + 1 if relabel else t["labels"],  # 1->2, 2->3, 3->1
            }
            for t in targets
        ]

    perfect = detection_scores(predicted(), targets, names)
    assert perfect["map"] == pytest.approx(1.0) and perfect["map_50"] == pytest.approx(1.0)
    assert perfect["ap_circle"] == perfect["ap_square"] == pytest.approx(1.0)
    # Shifted by 3 px: still a hit at IoU 0.5, not at the stricter thresholds.
    shifted = detection_scores(predicted(shift=3.0), targets)
    assert shifted["map_50"] == pytest.approx(1.0) and shifted["map"] < 0.8
    assert "ap_circle" not in shifted  # per-class scores only when the names are given
    wrong = detection_scores(predicted(relabel=True), targets)
    assert wrong["map_50"] == pytest.approx(0.0)


def test_the_sweep_checks_a_detection_task_before_any_trial():
    from types import SimpleNamespace

    from nas_plugin.sweep.plan import SweepConfigError, check_compute

    plan = SimpleNamespace(gpus_per_trial=0, batch_size=1)
    job = OmegaConf.create({"task": shapes_task(augment="crop"), "train": {"device": "cpu"}})
    with pytest.raises(SweepConfigError, match="task.augment = 'crop' is not allowed"):
        check_compute(plan, OmegaConf.create({}), job)
    job.task.augment = "flip"
    job.task.shapes.size = 8
    with pytest.raises(SweepConfigError, match="task.shapes.size = 8 is too small"):
        check_compute(plan, OmegaConf.create({}), job)


# ---------------------------------------------------------------------------------------------
# End to end


@pytest.mark.e2e
def test_search_with_low_fidelity_and_pruner_registers_a_box_predicting_model(tmp_path):
    result = run_app_in_process(
        tmp_path,
        PIPELINE,
        "-m",
        "task.shapes.count=80",
        "hardware.latency_repeats=1",
        "hardware.latency_warmup=1",
        "train.bn_recalibration_images=32",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.strategy.population_size=2",
        "hydra.sweeper.strategy.sample_size=1",
        "hydra/sweeper/estimator=low_fidelity",
        "hydra.sweeper.estimator.epochs=2",
        "hydra.sweeper.estimator.data_fraction=0.5",
        "hydra.sweeper.estimator.resolution=32",
        "hydra/sweeper/pruner=asha",
        "hydra.sweeper.pruner.eta=2",
    )
    assert result.proc.returncode == 0, result.output
    parent, trials = result.runs("nas-detection-shapes")
    assert parent.data.params["search_space"] == "spinenet"
    assert parent.data.params["pruner"] == "asha"
    assert len(trials) == 3
    client = result.client()
    for trial in trials:
        params, metrics, tags = trial.data.params, trial.data.metrics, trial.data.tags
        assert params["model.blocks.block_3.level"] in ("2", "3", "4", "5")
        assert params["model.pyramid.fusion"] in ("none", "top_down", "bidirectional")
        assert params["estimator.resolution"] == "32"
        config = client.download_artifacts(trial.info.run_id, "trial/config.yaml")
        assert "resolution: 32" in open(config).read()
        for key in ("val_map_50", "val_map", "test_map_50", "test_map"):
            assert 0.0 <= metrics[key] <= 1.0, key
        assert metrics["params"] > 0 and metrics["latency_ms"] > 0 and metrics["flops"] > 0
        history = [m.step for m in client.get_metric_history(trial.info.run_id, "val_map_50")]
        if "nas.pruned_step" in tags:  # stopped after its first epoch: no model logged
            assert history == [1] and "nas.model_uri" not in tags
        else:
            assert history == [1, 2] and tags["nas.model_uri"].startswith("models:/")

    finished = [t for t in trials if "nas.pruned_step" not in t.data.tags]
    best = max(finished, key=lambda t: t.data.metrics["val_map_50"])
    version = client.get_model_version_by_alias("nas-detection-shapes", "champion")
    assert version.tags["run_id"] == best.info.run_id

    # From the registry alone, in a new process: raw 64x64 images in (the detector ran at
    # 32x32), padded boxes/scores/labels out in the input's pixels; scored here, they give the
    # mAP the trial logged for its val split.
    data = load_detection_data(shapes_task(shapes={**shapes_task()["shapes"], "count": 80}))
    images = torch.stack([data.val[i][0] for i in range(len(data.val))]).numpy()
    out, predictions = boxes_from_registry(
        result.tracking_uri, "models:/nas-detection-shapes@champion", images, tmp_path
    )
    assert out.shape == (len(images), 100, 6)
    found = out[..., 5] >= 0
    assert found.any() and set(out[..., 5][found].tolist()) <= {1.0, 2.0, 3.0, 4.0}
    assert (out[..., 5][~found] == -1).all() and (out[..., 4][~found] == 0).all()
    assert out[..., :4][found].min() >= 0 and out[..., :4][found].max() <= 64
    scores = out[..., 4]
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    targets = [data.val[i][1] for i in range(len(data.val))]
    rescored = detection_scores(predictions, targets)
    assert rescored["map_50"] == pytest.approx(best.data.metrics["val_map_50"], abs=0.02)


@pytest.mark.e2e
def test_a_bad_searched_key_value_is_refused_before_any_trial(tmp_path):
    result = run_app_in_process(tmp_path, PIPELINE, "-m", "model.blocks.block_2.level=7")
    assert result.proc.returncode != 0
    assert "model.blocks.block_2.level = 7 is not allowed: expected one of 2, 3, 4, 5" in (
        result.output
    )
    assert "Launching" not in result.output


# ---------------------------------------------------------------------------------------------
# Candidates that build the same network


def test_network_key_ignores_a_block_that_feeds_nothing_and_the_order_of_inputs():
    job = OmegaConf.create({"model": model_config()})
    # Block 5 takes block 3 twice: block 4 (level 4, not the last block there) feeds nothing.
    dead_4 = {"model.blocks.block_5.input_1": 2, "model.blocks.block_5.input_2": 2}
    same = [
        network_key(
            {**dead_4, "model.blocks.block_4.type": kind, "model.blocks.block_4.input_2": k}, job
        )
        for kind in ("residual", "bottleneck")
        for k in (1, 3)
    ]
    assert len(set(same)) == 1
    swapped = {"model.blocks.block_3.input_1": 2, "model.blocks.block_3.input_2": 1}
    assert network_key(swapped, job) == network_key(
        {"model.blocks.block_3.input_1": 1, "model.blocks.block_3.input_2": 2}, job
    )
    # A block that computes, or the pyramid, makes another network.
    assert network_key({"model.blocks.block_4.type": "bottleneck"}, job) != network_key({}, job)
    assert network_key({**dead_4, "model.pyramid.fusion": "none"}, job) != same[0]
    # Moving block 4 to level 2 makes it P2's source block: it computes again.
    assert network_key({**dead_4, "model.blocks.block_4.level": 2}, job) != same[0]


@pytest.mark.e2e
def test_a_sweep_trains_each_network_once(tmp_path):
    result = run_app_in_process(
        tmp_path,
        PIPELINE,
        "-m",
        "task.shapes.count=80",
        "hardware.measure=false",
        "log_model=false",
        "hydra/sweeper/strategy=grid",
        "hydra/sweeper/estimator=zero_cost",
        "hydra.sweeper.estimator.batch_size=8",
        "hydra.sweeper.objective.metric=synflow",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.leaderboard_columns=[]",
        "~hydra.sweeper.search_space.params",
        "+hydra.sweeper.search_space.params={model.blocks.block_4.type:[residual,bottleneck],"
        "model.pyramid.fusion:[none,top_down]}",
        "model.blocks.block_5.input_1=2",
        "model.blocks.block_5.input_2=2",
    )
    assert result.proc.returncode == 0, result.output
    _, trials = result.runs("nas-detection-shapes")
    # Four candidates, two networks: block 4 feeds nothing, so its type changes nothing.
    assert len(trials) == 2
    assert sorted(t.data.params["model.pyramid.fusion"] for t in trials) == ["none", "top_down"]
    assert "builds the same network as trial" in result.output


def test_a_block_that_feeds_nothing_is_not_built_so_twins_are_the_same_network():
    dead_4 = {"input_1": 2, "input_2": 2}
    twins = []
    for kind in ("residual", "bottleneck"):
        cfg = model_config()
        cfg["blocks"]["block_5"].update(dead_4)
        cfg["blocks"]["block_4"]["type"] = kind
        torch.manual_seed(0)
        twins.append(build_model(cfg, 4, 3).eval())
    first, second = (dict(t.state_dict()) for t in twins)
    assert list(first) == list(second) and all(torch.equal(first[k], second[k]) for k in first)
    assert not any(k.startswith("backbone.blocks.3.") for k in first)  # block 4: nothing built
    images = torch.rand(2, 3, 64, 64)
    a, b = (t.backbone(images) for t in twins)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The default baseline chain uses every block.
    assert build_model(model_config(), 4, 3).backbone.computing == frozenset(range(1, 6))
