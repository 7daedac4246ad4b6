"""What the dense tasks' data (segmentation, detection) share: generated shapes on textured
backgrounds, the checks of their config, the seeded split, the augmentation choice, and the
splits' common plumbing (:class:`DenseSplits`: shapes, loaders, channel statistics).

Generated images: a gray background modulated by an oriented sine grating, shapes (circle,
square, triangle, cross) at a random place, size and rotation painted in a saturated colour of
any hue, so that colour says *where* a shape is and only its outline says *which* one it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from nas_plugin.models.checks import positive_int as _model_positive_int
from nas_plugin.tasks.vision_data import LoaderOptions, build_loader

SHAPE_NAMES = ("circle", "square", "triangle", "cross")
AUGMENTATIONS = ("none", "flip")
STATS_IMAGES = 2048  # training images the channel statistics are estimated on


def saturated_colour(rng: np.random.Generator) -> np.ndarray:
    """A random hue at saturation 0.6-1 and value 0.5-1, as 3 x 1 x 1 RGB in [0, 1]."""
    hue, saturation, value = rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0)
    # HSV to RGB, as colorsys does it, without the per-pixel loop.
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    rgb = value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1)
    return rgb.reshape(3, 1, 1).astype(np.float32)


def texture(
    rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, colour: np.ndarray
) -> np.ndarray:
    """3 x H x W in [0, 1]: ``colour`` (3 x 1 x 1) modulated by a random oriented sine grating."""
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(3.0, xx.shape[0] / 2)
    phase = rng.uniform(0, 2 * math.pi)
    wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period + phase)
    contrast = np.float32(rng.uniform(0.03, 0.15))
    return np.clip(colour + contrast * wave[None], 0.0, 1.0).astype(np.float32)


def shape_area(
    name: str,
    rng: np.random.Generator,
    xx: np.ndarray,
    yy: np.ndarray,
    size: int,
    radius: tuple[float, float],
    centre: tuple[float, float],
) -> np.ndarray:
    """The boolean H x W area of one shape ``name`` at a random rotation, its radius a random
    fraction in ``radius`` of ``size`` and its centre a random one in ``centre`` (partly outside
    the image is allowed)."""
    r = rng.uniform(*radius) * size
    cx, cy = rng.uniform(centre[0] * size, centre[1] * size, size=2)
    theta = rng.uniform(0, 2 * math.pi)
    # Coordinates in the shape's own rotated frame, in units of its radius.
    u = ((xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)) / r
    v = (-(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)) / r
    if name == "circle":
        return u * u + v * v <= 1.0
    if name == "square":
        side = 1 / math.sqrt(2)  # a square inscribed in the circle of the radius
        return (np.abs(u) <= side) & (np.abs(v) <= side)
    if name == "triangle":
        # Equilateral, inscribed in the unit circle: three half-planes.
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            normal = 2 * math.pi * k / 3
            inside &= u * math.cos(normal) + v * math.sin(normal) <= 0.5
        return inside
    if name == "cross":
        arm = 0.3
        return ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))
    raise ValueError(f"unknown shape {name!r}: expected one of {', '.join(SHAPE_NAMES)}")


def generator_settings(
    task_cfg: Mapping[str, Any], group: str, most_key: str, min_size: int
) -> dict[str, Any]:
    """The checked ``task.<group>`` options of an image generator: ``count``, ``size`` (>=
    ``min_size``), ``<most_key>`` (shapes per image at most), ``seed`` and ``noise``."""
    options = task_cfg.get(group) or {}
    settings = {
        key: positive_int(options, key, f"task.{group}.{key}")
        for key in ("count", "size", most_key)
    }
    settings["seed"] = options.get("seed", 0)
    if settings["size"] < min_size:
        raise ValueError(
            f"task.{group}.size = {settings['size']} is too small: expected >= {min_size}"
        )
    if isinstance(settings["seed"], bool) or not isinstance(settings["seed"], int):
        raise ValueError(
            f"task.{group}.seed = {settings['seed']!r} is not allowed: expected an integer"
        )
    noise = options.get("noise", 0.08)
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 <= noise <= 1:
        raise ValueError(f"task.{group}.noise = {noise!r} is not allowed: expected 0 <= noise <= 1")
    settings["noise"] = float(noise)
    return settings


class Subsettable(Protocol):
    def __len__(self) -> int: ...

    def subset(self, indices: np.ndarray) -> Any: ...


DatasetT = TypeVar("DatasetT", bound=Subsettable)


def split_dataset(task_cfg: Mapping[str, Any], full: DatasetT) -> tuple[Any, Any, Any]:
    """(train, val, test): a permutation seeded by ``task.split_seed`` cut by the fractions."""
    count = len(full)
    val_count = round(fraction(task_cfg, "val_fraction") * count)
    test_count = round(fraction(task_cfg, "test_fraction") * count)
    if min(val_count, test_count, count - val_count - test_count) < 1:
        raise ValueError(
            f"{count} image(s) cannot be split with task.val_fraction = "
            f"{task_cfg.get('val_fraction')} and task.test_fraction = "
            f"{task_cfg.get('test_fraction')} so that train, val and test each get one: add "
            "images or change the fractions"
        )
    order = np.random.default_rng(int(task_cfg.get("split_seed", 0))).permutation(count)
    test_idx = np.sort(order[:test_count])
    val_idx = np.sort(order[test_count : test_count + val_count])
    train_idx = np.sort(order[test_count + val_count :])
    return full.subset(train_idx), full.subset(val_idx), full.subset(test_idx)


def augmentation(task_cfg: Mapping[str, Any]) -> str:
    """``task.augment``: ``none`` or ``flip`` (horizontal, with the labels flipped along)."""
    name = task_cfg.get("augment", "none")
    name = "none" if name in (None, False) else name
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"task.augment = {name!r} is not allowed: expected one of {', '.join(AUGMENTATIONS)}"
        )
    return name


def positive_int(cfg: Mapping[str, Any], field: str, key: str | None = None) -> int:
    """``cfg[field]``, an integer >= 1, else a ValueError naming ``key`` (``task.<field>``)."""
    return _model_positive_int(cfg, field, key, group="task")


def fraction(task_cfg: Mapping[str, Any], key: str) -> float:
    value = task_cfg.get(key, 0.15)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ValueError(f"task.{key} = {value!r} is not allowed: expected 0 < fraction < 1")
    return float(value)


def check_common_task_config(task_cfg: Mapping[str, Any], datasets: Sequence[str]) -> str:
    """The checks every dense task config gets before any image is read (``task.dataset`` in
    ``datasets``, the loader settings, ``task.augment``, ``task.resolution``, the split
    fractions); returns the dataset's name. ValueErrors name the key."""
    dataset = task_cfg.get("dataset")
    if dataset not in datasets:
        raise ValueError(
            f"task.dataset = {dataset!r} is not allowed: expected one of {', '.join(datasets)}"
        )
    LoaderOptions.from_config(task_cfg)
    augmentation(task_cfg)
    positive_int(task_cfg, "resolution")
    if fraction(task_cfg, "val_fraction") + fraction(task_cfg, "test_fraction") >= 1.0:
        raise ValueError(
            "task.val_fraction + task.test_fraction leaves no training images: expected a sum < 1"
        )
    return str(dataset)


class DenseSplits:
    """What ``SegmentationData`` and ``DetectionData`` (dataclasses with ``train``, ``val``,
    ``test``, ``class_names``, ``flip`` and ``loader_options``) share."""

    #: how the task's loaders batch examples (None: torch's default collation)
    collate: ClassVar[Callable[[list], Any] | None] = None
    train: Any
    class_names: list[str]
    flip: bool
    loader_options: LoaderOptions

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_chans(self) -> int:
        return self.train.image_shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape

    @property
    def augmented_train(self) -> Any:
        """The training split with ``task.augment`` (random horizontal flips) applied."""
        return self.train.with_flip(True) if self.flip else self.train

    def loader(self, dataset: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
        """A DataLoader (batching with :attr:`collate`) with the task's worker settings, seeded
        as the vision task's are (:func:`~nas_plugin.tasks.vision_data.build_loader`)."""
        if type(self).collate is not None:
            kwargs["collate_fn"] = type(self).collate
        return build_loader(self.loader_options, dataset, batch_size, **kwargs)

    def recalibration_loader(self, images: int, seed: int, batch_size: int) -> DataLoader | None:
        """Batches of a seeded random subset of ``images`` unaugmented training images (None if
        ``images`` <= 0) for :func:`~nas_plugin.tasks.vision.recalibrate_batchnorm`."""
        if images <= 0:
            return None
        order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(seed))
        return self.loader(Subset(self.train, order[:images].tolist()), batch_size)

    def channel_stats(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of (a fixed-seed sample of ``STATS_IMAGES``) training
        images."""
        order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(0))
        sample = Subset(self.train, order[:STATS_IMAGES].tolist())
        channels = self.in_chans
        total = torch.zeros(channels, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        count = 0
        for images, _ in self.loader(sample, batch_size):
            images = images.double()
            total += images.sum(dim=(0, 2, 3))
            total_sq += images.square().sum(dim=(0, 2, 3))
            count += images.numel() // channels
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
        return mean.float(), std.float().clamp_min(1e-6)
