"""The vision task's data and preprocessing for supernet training and search (as a vision trial
loads them: same splits, same normalisation), cached per process."""

from __future__ import annotations

import functools
import json

import torch
from torch.utils.data import DataLoader

from nas_plugin.tasks.vision import Preprocess, channel_stats
from nas_plugin.tasks.vision_data import ImageTensorDataset, VisionData, cached_vision_data


@functools.lru_cache(maxsize=2)
def vision_data(key: str, train_fraction: float, seed: int) -> tuple[VisionData, Preprocess]:
    """The task's splits (``key``: :func:`~nas_plugin.tasks.vision_data.task_key`) and the
    trial's preprocessing (resize + normalise) module."""
    data = cached_vision_data(key, train_fraction, seed)
    mean, std = channel_stats(data.train)
    return data, Preprocess(int(json.loads(key)["resolution"]), mean, std)


def halves(train: ImageTensorDataset, seed: int) -> tuple[ImageTensorDataset, ImageTensorDataset]:
    """The training split cut in two random halves: weights learn on one, the architecture on
    the other (DARTS's bilevel split; the val split stays for scoring)."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).numpy()
    cut = len(order) // 2
    return train.subset(order[:cut]), train.subset(order[cut:])


def loader(dataset: ImageTensorDataset, batch_size: int, seed: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        drop_last=len(dataset) % batch_size == 1,  # BatchNorm needs 2+ images
    )
