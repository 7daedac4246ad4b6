"""One-shot searches and supernets on train.device / train.precision, on this CPU machine: bf16
runs record what they used, a missing GPU fails before any training, streamed image folders
split for the bilevel search, and subnets scored on shared loaders score as on fresh ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_app, sweep_runs
from omegaconf import OmegaConf
from PIL import Image

from nas_plugin.hardware.device import DeviceError, Runtime
from nas_plugin.space.nb201 import OPS

CONF = REPO / "conf"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
TINY = ["model.channels=4", "train.epochs=1", "hardware.measure=false", "train.train_fraction=0.3"]


def test_a_bf16_darts_search_and_a_bf16_supernet_record_their_runtime(tmp_path: Path) -> None:
    # One sweep, both paths: the DARTS search job, then its cell scored with weights inherited
    # from an SPOS supernet that the trial trains, both at bf16 on the CPU.
    result = run_app(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/strategy=darts",
        "hydra.sweeper.strategy.epochs=1",
        "hydra/sweeper/estimator=supernet",
        "hydra.sweeper.estimator.epochs=1",
        "hydra.sweeper.estimator.bn_images=128",
        f"hydra.sweeper.estimator.cache_dir={tmp_path / 'locks'}",
        "hydra.sweeper.objective.metric=val_accuracy",
        "hydra.sweeper.leaderboard_columns=[]",
        "hydra.sweeper.mlflow.experiment=bf16",
        "train.device=cpu",
        "train.precision=bf16",
        "train.compile=true",  # not applied to a supernet: the runs must say so
        *TINY,
    )
    assert result.proc.returncode == 0, result.output
    _, searches, trials = sweep_runs(result.client(), "bf16", result.output)
    assert len(searches) == 1 and len(trials) == 1
    expected = {
        "runtime.device": "cpu",
        "runtime.precision": "bf16",
        "runtime.channels_last": "false",
        "runtime.compile": "false",
    }
    for run in (searches[0], trials[0]):
        assert {k: run.data.tags.get(k) for k in expected} == expected, run.data.tags
    assert searches[0].info.status == "FINISHED"
    assert 0.0 <= searches[0].data.metrics["search_derived_val_accuracy"] <= 1.0
    assert trials[0].data.tags["nas.supernet"] == "trained"
    assert 0.0 <= trials[0].data.metrics["val_accuracy"] <= 1.0


def _nb201_app(**train: object):
    return OmegaConf.create(
        {
            "seed": 0,
            "task": OmegaConf.load(CONF / "task" / "digits.yaml"),
            "model": {"kind": "nb201", "channels": 4, "cells_per_stage": 1},
            "train": {"device": "cuda", **train},
        }
    )


@no_cuda
def test_a_missing_gpu_fails_a_search_and_a_supernet_trial_before_any_training() -> None:
    from nas_plugin.estimators import make_estimator
    from nas_plugin.oneshot.job import run_search

    cfg = _nb201_app()
    with pytest.raises(DeviceError, match="train.device = 'cuda' is not available"):
        run_search(cfg, {"method": "darts", "epochs": 1})
    # Outside a sweep's trial, the estimator would stop at its missing parent run: the device
    # is checked before it gets there.
    estimator = make_estimator({"name": "supernet", "kind": "nb201", "epochs": 1})
    with pytest.raises(DeviceError, match="train.device = 'cuda'"):
        estimator.run_job(cfg, lambda _: None)


@no_cuda
def test_a_missing_gpu_fails_the_ofa_app_before_its_supernet_trains(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from nas_plugin.supernets.ofa_targets import run_ofa

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("ofa", [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"])
    cfg.train.device = "cuda"
    with pytest.raises(DeviceError, match="train.device = 'cuda'"):
        run_ofa(cfg)
    assert not (tmp_path / "mlflow.db").exists()  # no run was started


def test_a_streamed_folder_splits_into_halves_read_by_the_task_workers(tmp_path: Path) -> None:
    from nas_plugin.oneshot.data import halves, loader
    from nas_plugin.tasks.vision_data import ImageFileDataset, load_vision_data

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(30):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    task = {"dataset": "image_folder", "root": str(tmp_path), "resolution": 8,
            "num_workers": 2, "augment": "flip"}  # fmt: skip
    data = load_vision_data(task)
    first, second = halves(data.augmented_train, seed=0)
    assert isinstance(first, ImageFileDataset) and isinstance(second, ImageFileDataset)
    assert first.transform is not None  # each half keeps the augmentation
    assert not set(first.paths) & set(second.paths)
    assert len(first) + len(second) == len(data.train)
    batches = loader(first, 8, seed=0, data=data)
    assert batches.num_workers == 2
    images, labels = next(iter(batches))
    assert images.shape == (8, 3, 8, 8) and labels.shape == (8,)


def test_subnets_scored_on_shared_loaders_score_as_on_fresh_ones() -> None:
    from nas_plugin.oneshot.data import vision_data
    from nas_plugin.oneshot.spos import ScoringBatches, evaluate_path
    from nas_plugin.supernets.nb201 import NB201Supernet
    from nas_plugin.tasks.vision_data import task_key

    torch.manual_seed(0)
    task = OmegaConf.load(CONF / "task" / "digits.yaml")
    data, preprocess = vision_data(task_key(task), 1.0, 0)
    supernet = NB201Supernet(4, 1, data.num_classes, data.in_chans)
    shared = ScoringBatches.of(data, 256, seed=0)
    cells = [tuple(OPS[(i + k) % len(OPS)] for k in range(6)) for i in range(2)]
    runtime = Runtime.cpu()
    kept = [
        evaluate_path(supernet, preprocess, data, c, 0, bn_images=256, batches=shared)[1]
        for c in cells
    ]
    fresh = [
        evaluate_path(supernet, preprocess, data, c, 0, bn_images=256, runtime=runtime)[1]
        for c in cells
    ]
    assert kept == fresh
    with pytest.raises(ValueError, match="bn_images=256, seed=0 used to score with bn_images=512"):
        evaluate_path(supernet, preprocess, data, cells[0], 0, bn_images=512, batches=shared)
