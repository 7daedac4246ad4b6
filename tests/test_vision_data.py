"""Datasets and splits: fixed, stratified, disjoint; local image folders; CIFAR-10 errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from sklearn.datasets import load_digits

from nas_plugin.tasks.vision_data import ImageTensorDataset, load_vision_data

CONF = Path(__file__).resolve().parent.parent / "conf" / "task"


@pytest.fixture(scope="module")
def digits_cfg():
    return OmegaConf.load(CONF / "digits.yaml")


def image_counter(*datasets: ImageTensorDataset) -> Counter:
    return Counter(
        (image.numpy().tobytes(), int(label))
        for dataset in datasets
        for image, label in zip(dataset.images, dataset.labels, strict=True)
    )


def test_digits_splits_partition_the_dataset(digits_cfg) -> None:
    data = load_vision_data(digits_cfg, train_fraction=1.0, seed=0)
    digits = load_digits()
    everything = Counter(
        ((image / 16.0).astype(np.float32).tobytes(), int(label))
        for image, label in zip(digits.images, digits.target, strict=True)
    )
    # Every image is in exactly one split (as multisets: digits has a few duplicate images).
    assert image_counter(data.train, data.val, data.test) == everything
    assert (len(data.val), len(data.test)) == (270, 270)  # 15% of 1,797 each
    assert data.num_classes == 10 and data.in_chans == 1
    assert data.class_names == [str(d) for d in range(10)]

    image, label = data.train[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert isinstance(label, int)


def test_digits_splits_are_stratified(digits_cfg) -> None:
    data = load_vision_data(digits_cfg, train_fraction=1.0, seed=0)
    per_class = np.bincount(load_digits().target)
    for split in (data.val, data.test):
        expected = per_class * len(split) / per_class.sum()
        assert np.abs(np.bincount(split.labels.numpy()) - expected).max() <= 1.0


def test_val_and_test_do_not_depend_on_the_trial(digits_cfg) -> None:
    first = load_vision_data(digits_cfg, train_fraction=1.0, seed=0)
    other_trial = load_vision_data(digits_cfg, train_fraction=0.5, seed=123)
    for a, b in [(first.val, other_trial.val), (first.test, other_trial.test)]:
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)

    reshuffled = OmegaConf.merge(digits_cfg, {"split_seed": 1})
    assert not torch.equal(load_vision_data(reshuffled).val.labels, first.val.labels)


def test_train_fraction_subsamples_only_the_train_split(digits_cfg) -> None:
    full = load_vision_data(digits_cfg, train_fraction=1.0, seed=0)
    quarter = load_vision_data(digits_cfg, train_fraction=0.25, seed=0)
    assert len(quarter.train) == round(0.25 * len(full.train))
    assert len(quarter.val) == len(full.val) and len(quarter.test) == len(full.test)
    assert not image_counter(quarter.train) - image_counter(full.train)  # a subset
    assert set(quarter.train.labels.tolist()) == set(range(10))  # stratified

    again = load_vision_data(digits_cfg, train_fraction=0.25, seed=0)
    reseeded = load_vision_data(digits_cfg, train_fraction=0.25, seed=1)
    assert torch.equal(again.train.images, quarter.train.images)
    assert not torch.equal(reseeded.train.images, quarter.train.images)


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_train_fraction_out_of_range_is_rejected(digits_cfg, fraction: float) -> None:
    with pytest.raises(ValueError, match="train.train_fraction"):
        load_vision_data(digits_cfg, train_fraction=fraction, seed=0)


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="digits, image_folder, cifar10"):
        load_vision_data({"dataset": "mnist"})


def write_image_folder(root: Path) -> dict[str, int]:
    """Three classes of 8 PNGs of mixed sizes; each class has its own gray level."""
    levels = {"cat": 30, "dog": 130, "fish": 230}
    for name, level in levels.items():
        (root / name).mkdir(parents=True)
        for i in range(8):
            size = (20, 12) if i % 2 else (9, 9)
            Image.new("RGB", size, (level, level, level)).save(root / name / f"{i}.png")
    return levels


def image_folder_cfg(root: str, **overrides):
    cfg = OmegaConf.load(CONF / "image_folder.yaml")
    return OmegaConf.merge(cfg, {"root": root, **overrides})


def test_image_folder_loads_classes_resized_and_converted(tmp_path: Path) -> None:
    levels = write_image_folder(tmp_path / "images")
    cfg = image_folder_cfg(
        str(tmp_path / "images"), resolution=16, in_chans=1, val_fraction=0.25, test_fraction=0.25
    )
    data = load_vision_data(cfg)

    assert data.class_names == ["cat", "dog", "fish"]
    assert data.num_classes == 3 and data.in_chans == 1
    assert (len(data.train), len(data.val), len(data.test)) == (12, 6, 6)
    for split in (data.train, data.val, data.test):
        for image, label in (split[i] for i in range(len(split))):
            assert image.shape == (1, 16, 16)
            expected = levels[data.class_names[label]] / 255.0
            assert image.mean().item() == pytest.approx(expected, abs=0.01)


def test_image_folder_in_rgb(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images")
    data = load_vision_data(image_folder_cfg(str(tmp_path / "images"), resolution=8))
    assert data.in_chans == 3 and data.train[0][0].shape == (3, 8, 8)


def test_image_folder_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="task.root = .* is not a directory"):
        load_vision_data(image_folder_cfg(str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no usable class folders"):
        load_vision_data(image_folder_cfg(str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="task.root is required"):
        load_vision_data(OmegaConf.load(CONF / "image_folder.yaml"))


def test_cifar10_without_data_or_download_explains_how_to_get_it(tmp_path: Path) -> None:
    cfg = OmegaConf.merge(
        OmegaConf.load(CONF / "cifar10.yaml"), {"root": str(tmp_path), "download": False}
    )
    with pytest.raises(FileNotFoundError, match="task.download is false"):
        load_vision_data(cfg)
