"""Segmentation: generated scenes and mask folders, the Auto-DeepLab-style network, mIoU, and the
pipeline as a real multirun read back from MLflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO, predict_in_new_process, run_app_in_process
from omegaconf import OmegaConf
from PIL import Image

from nas_plugin.models import build_model
from nas_plugin.models.autodeeplab import path_levels, validate_autodeeplab_space
from nas_plugin.space import SearchSpace
from nas_plugin.space.params import parse_param
from nas_plugin.tasks.segmentation import iou_scores, run_segmentation_trial
from nas_plugin.tasks.segmentation_data import (
    SCENE_CLASSES,
    check_task_config,
    generate_scenes,
    load_segmentation_data,
)

PIPELINE = str(REPO / "pipelines" / "segmentation.py")
CONF = REPO / "conf"


def scenes_task(**changes) -> dict:
    task = OmegaConf.to_container(OmegaConf.load(CONF / "task" / "segmentation.yaml"))
    task["scenes"]["count"] = 120
    return {**task, **changes}


def model_config(**changes) -> dict:
    model = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "autodeeplab.yaml"))
    for key, value in changes.items():
        node = model
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return model


# ---------------------------------------------------------------------------------------------
# Data


def test_scenes_are_the_same_for_a_seed_and_cover_every_class():
    make = generate_scenes.__wrapped__  # uncached: really generated twice
    images, masks = make(count=60, size=32, max_shapes=3, seed=5)
    again_images, again_masks = make(count=60, size=32, max_shapes=3, seed=5)
    other_images, _ = make(count=60, size=32, max_shapes=3, seed=6)
    assert images.shape == (60, 3, 32, 32) and images.dtype == np.uint8
    assert masks.shape == (60, 32, 32)
    assert np.array_equal(images, again_images) and np.array_equal(masks, again_masks)
    assert not np.array_equal(images, other_images)
    assert set(np.unique(masks)) == set(range(len(SCENE_CLASSES)))
    # Shapes are not a colour: each class's pixels span many hues.
    circle = images.transpose(0, 2, 3, 1)[masks == SCENE_CLASSES.index("circle")]
    assert circle.std(axis=0).min() > 30


def test_splits_depend_on_the_task_only_and_train_fraction_subsamples():
    task = scenes_task()
    a = load_segmentation_data(task, 1.0, seed=0)
    b = load_segmentation_data(task, 0.5, seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (84, 18, 18)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.test.masks, b.test.masks)
    assert len(b.train) == 42
    image, mask = a.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert mask.shape == (32, 32) and mask.dtype == torch.int64
    assert a.class_names == list(SCENE_CLASSES)


def write_mask_folder(root, count=12, size=(24, 20), palette_every=3):
    """``count`` RGB images and masks (ids 0..2 and 255) of ``size``, the mask's left third 1,
    right third 2; every ``palette_every``-th mask is a palette PNG."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    width, height = size
    rng = np.random.default_rng(0)
    for n in range(count):
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[:, : width // 3] = 1
        mask[:, 2 * width // 3 :] = 2
        mask[0, 0] = 255  # not scored
        picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        picture[mask == 1] = (230, 30, 30)
        Image.fromarray(picture).save(
            images / f"img_{n:02d}.jpg" if n % 2 else images / f"img_{n:02d}.png"
        )
        png = Image.fromarray(mask)
        if n % palette_every == 0:
            png = png.convert("P")
        png.save(masks / f"img_{n:02d}.png")
    return images, masks


def folder_task(images, masks, **changes) -> dict:
    task = OmegaConf.to_container(OmegaConf.load(CONF / "task" / "segmentation_folder.yaml"))
    task.update(images=str(images), masks=str(masks), num_classes=3, image_size=16)
    task.update(resolution=16, num_workers=0, val_fraction=0.25, test_fraction=0.25)
    return {**task, **changes}


def test_mask_folder_is_read_resized_and_paired_by_stem(tmp_path):
    images, masks = write_mask_folder(tmp_path)
    data = load_segmentation_data(folder_task(images, masks, class_names=["bg", "red", "blue"]))
    assert (len(data.train), len(data.val), len(data.test)) == (6, 3, 3)
    assert data.class_names == ["bg", "red", "blue"] and data.ignore_index == 255
    image, mask = data.train[0]
    assert image.shape == (3, 16, 16) and mask.shape == (16, 16)
    assert set(mask.unique().tolist()) == {0, 1, 2, 255}
    # Nearest-neighbour resizing keeps the mask's thirds; the red third is red in the image.
    assert (mask[5:, :4] == 1).all() and (mask[:, -4:] == 2).all()
    assert image[0, 5:, :4].mean() > 0.8 and image[1, 5:, :4].mean() < 0.2


def test_mask_folder_errors_name_the_problem(tmp_path):
    images, masks = write_mask_folder(tmp_path)
    with pytest.raises(ValueError, match=r"class id 2: expected ids 0..1 \(task.num_classes = 2\)"):
        data = load_segmentation_data(folder_task(images, masks, num_classes=2))
        [data.train[i] for i in range(len(data.train))]
    (masks / "img_03.png").unlink()
    with pytest.raises(FileNotFoundError, match="have no mask <stem>.png in task.masks.*'img_03'"):
        load_segmentation_data(folder_task(images, masks))
    with pytest.raises(ValueError, match="task.images is required"):
        check_task_config({**folder_task(images, masks), "images": "???"})
    with pytest.raises(ValueError, match="task.ignore_index = 1 is not allowed"):
        check_task_config(folder_task(images, masks, ignore_index=1))
    with pytest.raises(ValueError, match="task.augment = 'crop' is not allowed: expected one of"):
        check_task_config(scenes_task(augment="crop"))


def test_a_trial_trains_on_a_written_mask_folder(tmp_path):
    images, masks = write_mask_folder(tmp_path, count=16)
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "task": folder_task(images, masks),
            "model": model_config(channels=4, **{"aspp.channels": 8}),
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.01, "device": "cpu"},
            "hardware": {"measure": False},
        }
    )
    results = run_segmentation_trial(cfg)
    assert 0.0 <= results["val_miou"] <= 1.0 and results["epochs"] == 2.0
    assert {"val_iou_class_0", "test_iou_class_2", "test_pixel_accuracy"} <= set(results)
    again = run_segmentation_trial(cfg)  # same seed, same result
    for key in ("val_miou", "test_miou", "train_loss", "val_loss"):
        assert again[key] == results[key], key


# ---------------------------------------------------------------------------------------------
# Model and metric


@pytest.mark.parametrize(
    ("moves", "levels"),
    [
        (("down", "down", "same", "same"), (1, 2, 2, 2)),  # DeepLabv3, output stride 16
        (("down", "down", "down", "down"), (1, 2, 3, 3)),  # off the trellis: stays at 1/32
        (("up", "same", "down", "up"), (0, 0, 1, 0)),  # up at 1/4 stays at 1/4
        (("down", "down", "down", "up"), (1, 2, 3, 2)),
    ],
)
def test_every_path_maps_images_to_logits_of_their_size(moves, levels):
    assert path_levels(moves) == levels
    path = {f"layer_{k}": move for k, move in enumerate(moves, start=1)}
    net = build_model(model_config(path=path), num_classes=5, in_chans=3)
    assert net.levels == levels
    for height, width in ((32, 32), (16, 16), (21, 13)):
        assert net(torch.rand(2, 3, height, width)).shape == (2, 5, height, width)


def test_bad_model_values_are_named():
    with pytest.raises(ValueError, match="model.path.layer_2 = 'left' is not allowed: expected"):
        build_model(model_config(**{"path.layer_2": "left"}), 5, 3)
    with pytest.raises(ValueError, match="model.path.layer_5 is not a layer of this network"):
        build_model(model_config(**{"path.layer_5": "up"}), 5, 3)
    with pytest.raises(ValueError, match="model.path.layer_2 is missing"):
        build_model(model_config(layers=4, path={"layer_1": "down"}), 5, 3)
    with pytest.raises(ValueError, match="model.cell.edge_2_1 = 'conv_9x9' is not allowed"):
        build_model(model_config(**{"cell.edge_2_1": "conv_9x9"}), 5, 3)
    with pytest.raises(ValueError, match=r"model.aspp.rates = \[0\] is not allowed"):
        build_model(model_config(**{"aspp.rates": [0]}), 5, 3)


def test_the_space_validator_names_a_bad_searched_value():
    job = OmegaConf.create({"model": model_config()})
    good = SearchSpace([parse_param("model.path.layer_1", ["down", "same", "up"])])
    validate_autodeeplab_space(good, job)
    bad = SearchSpace([parse_param("model.path.layer_3", ["down", "sideways"])])
    with pytest.raises(ValueError, match="model.path.layer_3='sideways'.*expected one of"):
        validate_autodeeplab_space(bad, job)


def test_iou_scores_from_a_confusion_matrix():
    # Rows truth, columns prediction; class 2 appears nowhere.
    confusion = torch.tensor([[8, 2, 0], [1, 4, 0], [0, 0, 0]])
    scores = iou_scores(confusion, ["bg", "cat", "dog"])
    assert scores["iou_bg"] == pytest.approx(8 / 11)
    assert scores["iou_cat"] == pytest.approx(4 / 7)
    assert "iou_dog" not in scores
    assert scores["miou"] == pytest.approx((8 / 11 + 4 / 7) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(12 / 15)


# ---------------------------------------------------------------------------------------------
# End to end


@pytest.mark.e2e
def test_search_with_low_fidelity_and_pruner_registers_a_per_pixel_model(tmp_path):
    result = run_app_in_process(
        tmp_path,
        PIPELINE,
        "-m",
        "task.scenes.count=160",
        "hardware.latency_repeats=2",
        "hardware.latency_warmup=1",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.strategy.population_size=2",
        "hydra.sweeper.strategy.sample_size=1",
        "hydra/sweeper/estimator=low_fidelity",
        "hydra.sweeper.estimator.epochs=2",
        "hydra.sweeper.estimator.data_fraction=0.5",
        "hydra.sweeper.estimator.resolution=16",
        "hydra/sweeper/pruner=asha",
        "hydra.sweeper.pruner.eta=2",
    )
    assert result.proc.returncode == 0, result.output
    parent, trials = result.runs("nas-segmentation-scenes")
    assert parent.data.params["search_space"] == "autodeeplab"
    assert parent.data.params["pruner"] == "asha"
    assert len(trials) == 3
    client = result.client()
    for trial in trials:
        params, metrics, tags = trial.data.params, trial.data.metrics, trial.data.tags
        assert params["model.path.layer_1"] in ("down", "same", "up")
        assert params["model.cell.edge_3_2"] in (
            "none",
            "skip_connect",
            "nor_conv_1x1",
            "nor_conv_3x3",
            "avg_pool_3x3",
        )
        assert params["estimator.resolution"] == "16"
        config = client.download_artifacts(trial.info.run_id, "trial/config.yaml")
        assert "resolution: 16" in open(config).read()
        assert 0.0 < metrics["val_miou"] <= 1.0
        for name in SCENE_CLASSES:
            assert 0.0 <= metrics[f"val_iou_{name}"] <= 1.0, name
        assert metrics["params"] > 0 and metrics["latency_ms"] > 0 and metrics["flops"] > 0
        history = [m.step for m in client.get_metric_history(trial.info.run_id, "val_miou")]
        if "nas.pruned_step" in tags:  # stopped after its first epoch: no model logged
            assert history == [1] and "nas.model_uri" not in tags
        else:
            assert history == [1, 2] and tags["nas.model_uri"].startswith("models:/")

    best = max(
        (t for t in trials if "nas.pruned_step" not in t.data.tags),
        key=lambda t: t.data.metrics["val_miou"],
    )
    version = client.get_model_version_by_alias("nas-segmentation-scenes", "champion")
    assert version.tags["run_id"] == best.info.run_id

    # From the registry alone, in a new process: raw 32x32 scenes in, per-pixel logits out at
    # the input's size (the network ran at 16x16), with a signature saying so.
    data = load_segmentation_data(scenes_task(scenes={**scenes_task()["scenes"], "count": 160}))
    images = torch.stack([data.test[i][0] for i in range(len(data.test))]).numpy()
    masks = torch.stack([data.test[i][1] for i in range(len(data.test))]).numpy()
    shape, pixel_accuracy = predict_in_new_process(
        result.tracking_uri, "models:/nas-segmentation-scenes@champion", images, masks, tmp_path
    )
    assert shape == (len(images), len(SCENE_CLASSES), 32, 32)
    assert pixel_accuracy > 0.5
    import mlflow

    mlflow.set_tracking_uri(result.tracking_uri)
    signature = mlflow.models.get_model_info("models:/nas-segmentation-scenes@champion").signature
    assert signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3, 32, 32)
    assert signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 5, 32, 32)
    net = mlflow.pytorch.load_model("models:/nas-segmentation-scenes@champion")
    assert tuple(net(torch.from_numpy(images[:2])).shape) == (2, 5, 32, 32)


@pytest.mark.e2e
def test_a_bad_searched_key_value_is_refused_before_any_trial(tmp_path):
    # The space's validator checks the app's model config (the other checks before any trial,
    # e.g. task.augment, are the unit tests' check_task_config, which the sweep calls too).
    result = run_app_in_process(tmp_path, PIPELINE, "-m", "model.path.layer_2=sideways")
    assert result.proc.returncode != 0
    assert "model.path.layer_2 = 'sideways' is not allowed: expected one of" in result.output
    assert "Launching" not in result.output


def test_the_sweep_checks_a_segmentation_task_before_any_trial():
    from types import SimpleNamespace

    from nas_plugin.sweep.plan import SweepConfigError, check_compute

    plan = SimpleNamespace(gpus_per_trial=0, batch_size=1)
    job = OmegaConf.create({"task": scenes_task(augment="crop"), "train": {"device": "cpu"}})
    with pytest.raises(SweepConfigError, match="task.augment = 'crop' is not allowed"):
        check_compute(plan, OmegaConf.create({}), job)
    job.task.augment = "flip"
    job.task.scenes.count = 0
    with pytest.raises(SweepConfigError, match="task.scenes.count = 0 is not allowed"):
        check_compute(plan, OmegaConf.create({}), job)
