"""Single-path one-shot (SPOS, Guo et al. 2020): train the supernet on uniformly sampled cells,
then score any cell with the inherited weights.

Scoring follows SPOS and Once-for-All: optionally a few fine-tuning steps of the extracted
network, then BatchNorm statistics re-estimated on training images for that cell alone (the
supernet's running statistics mix all paths), then accuracy on the validation split.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_plugin.oneshot.data import loader
from nas_plugin.supernets.nb201 import NB201Supernet, sample_path
from nas_plugin.tasks.vision import evaluate, recalibrate_batchnorm
from nas_plugin.tasks.vision_data import VisionData


def train_spos(
    supernet: NB201Supernet,
    preprocess: nn.Module,
    data: VisionData,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    weight_decay: float = 1e-4,
) -> dict[str, float]:
    """Train ``supernet`` in place, one uniformly sampled cell per step (AdamW, cosine).

    Returns ``supernet_train_loss`` (last epoch's mean) and ``supernet_train_seconds``.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    batches = loader(data.train, batch_size, seed)
    optimizer = torch.optim.AdamW(supernet.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(batches))
    start = time.perf_counter()
    supernet.train()
    mean_loss = float("nan")
    for _ in range(epochs):
        total, seen = 0.0, 0
        for images, labels in batches:
            loss = F.cross_entropy(supernet(preprocess(images), path=sample_path(rng)), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"supernet training loss is {loss.item()}: lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, seen = total + loss.item() * len(labels), seen + len(labels)
        mean_loss = total / seen
    return {
        "supernet_train_loss": mean_loss,
        "supernet_train_seconds": time.perf_counter() - start,
    }


def evaluate_path(
    supernet: NB201Supernet,
    preprocess: nn.Module,
    data: VisionData,
    path: Sequence[str],
    seed: int,
    finetune_steps: int = 0,
    finetune_lr: float = 1e-3,
    batch_size: int = 64,
    bn_images: int = 512,
) -> tuple[nn.Module, dict[str, float]]:
    """The cell ``path`` with inherited weights, as a stand-alone model (preprocessing
    included), and its ``val_accuracy``, ``val_loss``, ``params``. The supernet is untouched."""
    model = nn.Sequential(copy.deepcopy(preprocess), supernet.extract(path))
    metrics = score_inherited(model, data, seed, finetune_steps, finetune_lr, batch_size, bn_images)
    return model, metrics


def score_inherited(
    model: nn.Module,
    data: VisionData,
    seed: int,
    finetune_steps: int = 0,
    finetune_lr: float = 1e-3,
    batch_size: int = 64,
    bn_images: int = 512,
) -> dict[str, float]:
    """Score a subnet extracted from a supernet (any kind): optionally ``finetune_steps`` AdamW
    steps on the training split, then BatchNorm statistics re-estimated on ``bn_images``
    training images, then ``val_accuracy``, ``val_loss`` and ``params``. ``model`` (with its
    preprocessing) is changed in place."""
    if finetune_steps > 0:
        torch.manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=finetune_lr)
        model.train()
        steps = 0
        while steps < finetune_steps:
            for images, labels in loader(data.train, batch_size, seed + steps):
                loss = F.cross_entropy(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                if steps == finetune_steps:
                    break
    recalibrate_batchnorm(model, data.train, bn_images, seed)
    val_loss, val_accuracy = evaluate(model, data.val)
    params = float(sum(p.numel() for p in model.parameters()))
    return {"val_accuracy": val_accuracy, "val_loss": val_loss, "params": params}
