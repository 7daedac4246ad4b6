"""Image classification datasets, split into train/val/test identically for every trial.

Every dataset yields ``(image, label)``: a float tensor C x H x W in [0, 1] at the dataset's
native resolution (``task.resolution`` for image folders, whose files are resized when read) and
an int label. The validation and test splits are stratified and seeded by ``task.split_seed``
only, so all trials of a sweep are scored on the same images.

Image folders are streamed: a dataset holds file paths only, and each image is decoded when a
batch needs it, in the DataLoader's worker processes (``task.num_workers``), so memory stays flat
however large the folder. The embedded digits and CIFAR-10 (whose files are one array) stay in
memory. :meth:`VisionData.loader` builds every split's DataLoader with the task's worker,
pinned-memory and persistent-worker settings; ``task.augment`` names the train-time
augmentation (:func:`augmentation`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.transforms import v2

Transform = Callable[[torch.Tensor], torch.Tensor]
AUGMENTATIONS = ("none", "flip", "crop", "crop_flip")
# RandomResizedCrop's area range: milder than ImageNet's (0.08, 1), since NAS trials are short
# and images small.
CROP_SCALE = (0.35, 1.0)
# Images whose mean and std normalise a streamed training split (an in-memory one uses all).
STATS_IMAGES = 4096
WORKER_SEED_OFFSET = 7919  # any constant: keeps the workers' seeds apart from the shuffle's


class ImageTensorDataset(Dataset):
    """In-memory images (N x C x H x W, uint8 or float in [0, 1]) and int labels.

    uint8 images (CIFAR-10: 50,000 of them) are kept as uint8 and scaled per item, at a quarter
    of the memory of float32. ``transform`` (e.g. :func:`augmentation`) applies per item.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, transform: Transform | None = None
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: np.ndarray) -> ImageTensorDataset:
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensorDataset(self.images[index], self.labels[index], self.transform)

    def with_transform(self, transform: Transform | None) -> ImageTensorDataset:
        """The same images (not copied) with ``transform`` per item."""
        return ImageTensorDataset(self.images, self.labels, transform)


class ImageFileDataset(Dataset):
    """Images read from their files when indexed, converted to ``in_chans`` channels and resized
    to ``resolution`` x ``resolution``: only the paths are held in memory, and the decoding runs
    in whichever (worker) process indexes it."""

    def __init__(
        self,
        paths: Sequence[str],
        labels: torch.Tensor,
        resolution: int,
        in_chans: int,
        transform: Transform | None = None,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} image paths but {len(labels)} labels")
        # A numpy array of str objects: workers forked from this process share its pages,
        # where a list of Python strings would be copied page by page as refcounts change.
        self.paths = np.asarray(paths, dtype=object)
        self.labels = labels.long()
        self.resolution = resolution
        self.in_chans = in_chans
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        mode = "L" if self.in_chans == 1 else "RGB"
        with Image.open(self.paths[index]) as file:
            picture = file.convert(mode).resize((self.resolution, self.resolution))
        array = np.asarray(picture, dtype=np.uint8).reshape(
            self.resolution, self.resolution, self.in_chans
        )
        image = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, self.resolution, self.resolution)

    def subset(self, indices: np.ndarray) -> ImageFileDataset:
        index = np.asarray(indices, dtype=np.int64)
        return ImageFileDataset(
            self.paths[index].tolist(),
            self.labels[torch.as_tensor(index)],
            self.resolution,
            self.in_chans,
            self.transform,
        )

    def with_transform(self, transform: Transform | None) -> ImageFileDataset:
        return ImageFileDataset(
            self.paths.tolist(), self.labels, self.resolution, self.in_chans, transform
        )


ImageDataset = ImageTensorDataset | ImageFileDataset


@dataclass(frozen=True)
class LoaderOptions:
    """How DataLoaders read a task's images: ``task.num_workers`` worker processes (0: in the
    trial's own process), ``task.pin_memory`` (auto: when CUDA is there) and
    ``task.persistent_workers`` (workers kept across epochs)."""

    num_workers: int = 0
    pin_memory: bool | str = "auto"
    persistent_workers: bool = True

    @classmethod
    def from_config(cls, task_cfg: Mapping[str, Any]) -> LoaderOptions:
        workers = task_cfg.get("num_workers", 0)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(
                f"task.num_workers = {workers!r} is not allowed: expected an integer >= 0"
            )
        pin = task_cfg.get("pin_memory", "auto")
        if pin != "auto" and not isinstance(pin, bool):
            raise ValueError(
                f"task.pin_memory = {pin!r} is not allowed: expected auto, true or false"
            )
        persistent = task_cfg.get("persistent_workers", True)
        if not isinstance(persistent, bool):
            raise ValueError(
                f"task.persistent_workers = {persistent!r} is not allowed: expected true or false"
            )
        return cls(workers, pin, persistent)

    @property
    def pins_memory(self) -> bool:
        # Pinned pages only speed up copies to a CUDA device.
        return torch.cuda.is_available() if self.pin_memory == "auto" else bool(self.pin_memory)


@dataclass
class VisionData:
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    num_classes: int
    in_chans: int
    class_names: list[str]
    # The train-time augmentation (``task.augment``); ``train`` itself is left unaugmented for
    # statistics, BatchNorm re-estimation and input examples.
    augment: Transform | None = None
    loader_options: LoaderOptions = LoaderOptions()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """C x H x W of one image at native resolution, e.g. (1, 8, 8) for digits."""
        return self.train.image_shape

    @property
    def augmented_train(self) -> ImageDataset:
        """The training split with ``task.augment`` applied per image (``train`` if none)."""
        return self.train if self.augment is None else self.train.with_transform(self.augment)

    def loader(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
    ) -> DataLoader:
        """A DataLoader over ``dataset`` (one of this data's splits, or part of one) with the
        task's :class:`LoaderOptions` (:func:`build_loader`)."""
        return build_loader(
            self.loader_options,
            dataset,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )


def build_loader(
    options: LoaderOptions,
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    drop_last: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` with ``options`` (workers, pinned memory, persistent
    workers). ``seed`` seeds the shuffle (the same order whatever ``task.num_workers`` is) and
    the augmentation in the workers (the same images for the same seed and number of
    workers). ``collate_fn`` batches items (default: torch's, which stacks)."""
    workers = options.num_workers
    sampler, generator = None, None
    if seed is not None:
        # Two generators: the shuffle's own, and the DataLoader's, which seeds the workers'
        # augmentation and would otherwise shift the shuffle when workers are added.
        generator = torch.Generator().manual_seed(seed + WORKER_SEED_OFFSET)
        if shuffle:
            shuffle_generator = torch.Generator().manual_seed(seed)
            sampler = RandomSampler(dataset, generator=shuffle_generator)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=generator,
        drop_last=drop_last,
        collate_fn=collate_fn,
        num_workers=workers,
        pin_memory=options.pins_memory,
        persistent_workers=workers > 0 and options.persistent_workers,
        worker_init_fn=_single_threaded_worker if workers > 0 else None,
    )


def _single_threaded_worker(_: int) -> None:
    # Decoding workers run beside the trial's own threads: one torch thread each.
    torch.set_num_threads(1)


def augmentation(task_cfg: Mapping[str, Any]) -> Transform | None:
    """The train-time augmentation ``task.augment`` names (torchvision transforms v2):
    ``none``, ``flip`` (random horizontal flip), ``crop`` (random resized crop back to the
    native size, area 35-100 %) or ``crop_flip`` (both)."""
    name = task_cfg.get("augment", "none")
    name = "none" if name in (None, False) else name
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"task.augment = {name!r} is not allowed: expected one of {', '.join(AUGMENTATIONS)}"
        )
    steps: list[Transform] = []
    if name in ("crop", "crop_flip"):
        size = _native_size(task_cfg)
        steps.append(v2.RandomResizedCrop(size, scale=CROP_SCALE, antialias=True))
    if name in ("flip", "crop_flip"):
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps) if steps else None


def _native_size(task_cfg: Mapping[str, Any]) -> int:
    """The side of the images the dataset yields (crops are resized back to it)."""
    native = {"digits": 8, "cifar10": 32}
    return native.get(task_cfg.get("dataset"), None) or _resolution(task_cfg)


def load_vision_data(
    task_cfg: Mapping[str, Any], train_fraction: float = 1.0, seed: int = 0
) -> VisionData:
    """Load ``task.dataset`` and split it; ``train_fraction`` < 1 subsamples the train split.

    The val/test splits depend only on the task config. The train subsample (stratified where
    every class can keep an image) is seeded by ``seed``.
    """
    check_task_config(task_cfg)
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(
            f"train.train_fraction = {train_fraction} is not allowed: expected 0 < fraction <= 1"
        )
    options, augment = LoaderOptions.from_config(task_cfg), augmentation(task_cfg)
    data = _LOADERS[task_cfg["dataset"]](task_cfg)
    if train_fraction < 1.0:
        data.train = _subsample(data.train, train_fraction, seed, data.num_classes)
    data.augment, data.loader_options = augment, options
    return data


def check_task_config(task_cfg: Mapping[str, Any]) -> None:
    """Raise ValueError for an unknown ``task.dataset`` or bad loader options (``num_workers``,
    ``pin_memory``, ``persistent_workers``, ``augment``) without reading any image: the sweep
    calls it before the first trial."""
    dataset = task_cfg.get("dataset")
    if dataset not in _LOADERS:
        raise ValueError(
            f"task.dataset = {dataset!r} is not allowed: expected one of {', '.join(_LOADERS)}"
        )
    LoaderOptions.from_config(task_cfg)
    augmentation(task_cfg)


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

    paths = [path for path, _ in folder.samples]
    full = ImageFileDataset(paths, torch.tensor(folder.targets), resolution, in_chans)
    return _split(task_cfg, full, list(folder.classes))


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
DATASETS = tuple(_LOADERS)


def _split(task_cfg: Mapping[str, Any], full: ImageDataset, names: list[str]) -> VisionData:
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
        in_chans=full.image_shape[0],
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


def _subsample(train: ImageDataset, fraction: float, seed: int, num_classes: int) -> ImageDataset:
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
