"""Image classification datasets, split into train/val/test identically for every trial.

Every dataset yields ``(image, label)``: a float tensor C x H x W in [0, 1] at the dataset's
native resolution (``task.resolution`` for image folders, whose files are resized on load) and
an int label. The validation and test splits are stratified and seeded by ``task.split_seed``
only, so all trials of a sweep are scored on the same images.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset


class ImageTensorDataset(Dataset):
    """In-memory images (N x C x H x W, uint8 or float in [0, 1]) and int labels.

    uint8 images (CIFAR-10: 50,000 of them) are kept as uint8 and scaled per item, at a quarter
    of the memory of float32.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        return image, int(self.labels[index])

    def subset(self, indices: np.ndarray) -> ImageTensorDataset:
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensorDataset(self.images[index], self.labels[index])


@dataclass
class VisionData:
    train: ImageTensorDataset
    val: ImageTensorDataset
    test: ImageTensorDataset
    num_classes: int
    in_chans: int
    class_names: list[str]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """C x H x W of one image at native resolution, e.g. (1, 8, 8) for digits."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


def load_vision_data(
    task_cfg: Mapping[str, Any], train_fraction: float = 1.0, seed: int = 0
) -> VisionData:
    """Load ``task.dataset`` and split it; ``train_fraction`` < 1 subsamples the train split.

    The val/test splits depend only on the task config. The train subsample (stratified where
    every class can keep an image) is seeded by ``seed``.
    """
    dataset = task_cfg.get("dataset")
    if dataset not in _LOADERS:
        raise ValueError(
            f"task.dataset = {dataset!r} is not allowed: expected one of {', '.join(_LOADERS)}"
        )
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(
            f"train.train_fraction = {train_fraction} is not allowed: expected 0 < fraction <= 1"
        )
    data = _LOADERS[dataset](task_cfg)
    if train_fraction < 1.0:
        data.train = _subsample(data.train, train_fraction, seed, data.num_classes)
    return data


def task_key(task_cfg: Any) -> str:
    """A canonical JSON text of ``cfg.task`` (the key of :func:`cached_vision_data`)."""
    plain = (
        OmegaConf.to_container(task_cfg, resolve=True)
        if OmegaConf.is_config(task_cfg)
        else task_cfg
    )
    if not isinstance(plain, Mapping):
        raise ValueError(f"task = {task_cfg!r} is not allowed: expected a mapping")
    return json.dumps(plain, sort_keys=True, default=str)


@functools.lru_cache(maxsize=2)
def cached_vision_data(key: str, train_fraction: float = 1.0, seed: int = 0) -> VisionData:
    """:func:`load_vision_data` of the task ``key`` (:func:`task_key`), loaded once per process:
    a pre-screen, a supernet or a search uses the same data many times. Do not modify it."""
    return load_vision_data(json.loads(key), train_fraction, seed)


def _load_digits(task_cfg: Mapping[str, Any]) -> VisionData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are counts 0..16 of the set pixels in a 4x4 block.
    images = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)
    labels = torch.from_numpy(digits.target)
    names = [str(n) for n in digits.target_names]
    return _split(task_cfg, ImageTensorDataset(images, labels), names)


def _load_image_folder(task_cfg: Mapping[str, Any]) -> VisionData:
    from torchvision.datasets import ImageFolder

    root = Path(_required(task_cfg, "root")).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"task.root = {str(root)!r} is not a directory: point it at a folder with one "
            "subfolder of images per class"
        )
    in_chans = int(task_cfg.get("in_chans", 3))
    if in_chans not in (1, 3):
        raise ValueError(f"task.in_chans = {in_chans} is not allowed: expected 1 or 3")
    resolution = _resolution(task_cfg)
    try:
        folder = ImageFolder(str(root))
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"task.root = {str(root)!r} has no usable class folders: expected "
            f"root/<class>/<image>.png|jpg|... ({err})"
        ) from err

    mode = "L" if in_chans == 1 else "RGB"
    images = torch.empty((len(folder), in_chans, resolution, resolution), dtype=torch.uint8)
    for i, (path, _) in enumerate(folder.samples):
        image = folder.loader(path).convert(mode).resize((resolution, resolution))
        array = np.asarray(image, dtype=np.uint8).reshape(resolution, resolution, in_chans)
        images[i] = torch.from_numpy(array.copy()).permute(2, 0, 1)
    labels = torch.tensor(folder.targets)
    return _split(task_cfg, ImageTensorDataset(images, labels), list(folder.classes))


def _load_cifar10(task_cfg: Mapping[str, Any]) -> VisionData:
    from torchvision.datasets import CIFAR10

    root = Path(_required(task_cfg, "root")).expanduser()
    download = bool(task_cfg.get("download", False))
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"CIFAR-10 is not in task.root = {str(root)!r} and task.download is false: set "
            "task.download=true on a machine with internet access, or copy the extracted "
            f"'cifar-10-batches-py' folder there ({err})"
        ) from err
    except OSError as err:  # URLError and socket errors are OSErrors
        raise ConnectionError(
            f"could not download CIFAR-10 into task.root = {str(root)!r}: {err}. Download it "
            "where there is internet access and copy 'cifar-10-batches-py' there"
        ) from err

    def as_dataset(split: Any) -> ImageTensorDataset:
        images = torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()
        return ImageTensorDataset(images, torch.tensor(split.targets))

    full_train = as_dataset(train)
    # CIFAR has its own test set: only the validation split is carved from the training set.
    train_idx, val_idx = _stratified(
        full_train.labels.numpy(), _fraction(task_cfg, "val_fraction"), task_cfg, "val_fraction"
    )
    return VisionData(
        train=full_train.subset(train_idx),
        val=full_train.subset(val_idx),
        test=as_dataset(test),
        num_classes=len(train.classes),
        in_chans=3,
        class_names=list(train.classes),
    )


_LOADERS = {"digits": _load_digits, "image_folder": _load_image_folder, "cifar10": _load_cifar10}


def _split(task_cfg: Mapping[str, Any], full: ImageTensorDataset, names: list[str]) -> VisionData:
    labels = full.labels.numpy()
    val_fraction = _fraction(task_cfg, "val_fraction")
    test_fraction = _fraction(task_cfg, "test_fraction")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"task.val_fraction + task.test_fraction = {val_fraction + test_fraction} leaves "
            "no training data: expected a sum < 1"
        )
    rest_idx, test_idx = _stratified(labels, test_fraction, task_cfg, "test_fraction")
    # val_fraction is of the whole dataset: rescale it to the part left after the test split.
    train_pos, val_pos = _stratified(
        labels[rest_idx], val_fraction / (1.0 - test_fraction), task_cfg, "val_fraction"
    )
    return VisionData(
        train=full.subset(rest_idx[train_pos]),
        val=full.subset(rest_idx[val_pos]),
        test=full.subset(test_idx),
        num_classes=len(names),
        in_chans=int(full.images.shape[1]),
        class_names=names,
    )


def _stratified(
    labels: np.ndarray, fraction: float, task_cfg: Mapping[str, Any], key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, split off) with ``fraction`` of each class split off."""
    indices = np.arange(len(labels))
    try:
        kept, split = train_test_split(
            indices,
            test_size=fraction,
            stratify=labels,
            random_state=int(task_cfg.get("split_seed", 0)),
        )
    except ValueError as err:
        raise ValueError(
            f"cannot split {len(labels)} images with task.{key} = {fraction} so that every "
            f"class is in both parts: {err}. Add images or change task.{key}"
        ) from err
    return np.sort(kept), np.sort(split)


def _subsample(
    train: ImageTensorDataset, fraction: float, seed: int, num_classes: int
) -> ImageTensorDataset:
    labels = train.labels.numpy()
    keep = max(1, round(fraction * len(labels)))
    if keep >= len(labels):
        return train
    # Stratify when every class can keep at least one image; otherwise sample uniformly.
    can_stratify = min(keep, len(labels) - keep) >= num_classes and np.bincount(labels).min() >= 2
    stratify = labels if can_stratify else None
    kept, _ = train_test_split(
        np.arange(len(labels)), train_size=keep, stratify=stratify, random_state=seed
    )
    return train.subset(np.sort(kept))


def _required(task_cfg: Mapping[str, Any], key: str) -> Any:
    missing = isinstance(task_cfg, DictConfig) and OmegaConf.is_missing(task_cfg, key)
    value = None if missing else task_cfg.get(key)
    if value in (None, "", "???"):
        dataset = task_cfg.get("dataset")
        raise ValueError(
            f"task.{key} is required for task.dataset={dataset}: pass task.{key}=<path>"
        )
    return value


def _fraction(task_cfg: Mapping[str, Any], key: str) -> float:
    value = task_cfg.get(key, 0.15)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ValueError(f"task.{key} = {value!r} is not allowed: expected 0 < fraction < 1")
    return float(value)


def _resolution(task_cfg: Mapping[str, Any]) -> int:
    value = task_cfg.get("resolution")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"task.resolution = {value!r} is not allowed: expected an integer >= 1")
    return value
