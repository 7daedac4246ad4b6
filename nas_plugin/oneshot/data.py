"""The vision task's data and preprocessing for supernet training and search (as a vision trial
loads them: same splits, same normalisation), cached per process."""

from __future__ import annotations

import functools
import json

import torch
from torch.utils.data import DataLoader

from nas_plugin.tasks.vision import Preprocess, channel_stats
from nas_plugin.tasks.vision_data import ImageDataset, VisionData, cached_vision_data


@functools.lru_cache(maxsize=2)
def vision_data(key: str, train_fraction: float, seed: int) -> tuple[VisionData, Preprocess]:
    """The task's splits (``key``: :func:`~nas_plugin.tasks.vision_data.task_key`) and the
    trial's preprocessing (resize + normalise) module, on the CPU (callers copy it to their
    device: it is shared)."""
    data = cached_vision_data(key, train_fraction, seed)
    mean, std = channel_stats(data.train, loader=data.loader)
    return data, Preprocess(int(json.loads(key)["resolution"]), mean, std)


def halves(train: ImageDataset, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """The training split cut in two random halves: weights learn on one, the architecture on
    the other (DARTS's bilevel split; the val split stays for scoring). In-memory and streamed
    (image file) splits alike; each half keeps the split's transform."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).numpy()
    cut = len(order) // 2
    return train.subset(order[:cut]), train.subset(order[cut:])


def loader(
    dataset: ImageDataset, batch_size: int, seed: int, data: VisionData | None = None
) -> DataLoader:
    """Shuffled training batches of ``dataset`` (seeded), through ``data.loader`` when ``data``
    is given (the task's workers, pinned memory and persistent workers), else in-process."""
    drop_last = len(dataset) % batch_size == 1  # BatchNorm needs 2+ images
    if data is not None:
        return data.loader(dataset, batch_size, shuffle=True, seed=seed, drop_last=drop_last)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        drop_last=drop_last,
    )
