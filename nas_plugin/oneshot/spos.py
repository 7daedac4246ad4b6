"""Single-path one-shot (SPOS, Guo et al. 2020): train the supernet on uniformly sampled cells,
then score any cell with the inherited weights.

Scoring follows SPOS and Once-for-All: optionally a few fine-tuning steps of the extracted
network, then BatchNorm statistics re-estimated on training images for that cell alone (the
supernet's running statistics mix all paths), then accuracy on the validation split.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from nas_plugin.hardware.device import Runtime
from nas_plugin.oneshot.data import loader
from nas_plugin.supernets.nb201 import NB201Supernet, sample_path
from nas_plugin.tasks.vision import (
    EVAL_BATCH_SIZE,
    evaluate,
    model_device,
    recalibrate_batchnorm,
    recalibration_loader,
)
from nas_plugin.tasks.vision_data import VisionData


@dataclass(frozen=True)
class ScoringBatches:
    """The unaugmented batches every inherited-weight score reads: BatchNorm re-estimation on a
    seeded subset of ``bn_images`` training images, the val and the test split. Built once per
    search or supernet (many subnets are scored on them), so with ``task.num_workers > 0`` their
    worker processes start once and persist; every pass yields the same batches in the same
    order, so a score does not depend on how many were taken before it."""

    bn: DataLoader | None
    val: DataLoader
    test: DataLoader
    bn_images: int
    seed: int

    @classmethod
    def of(cls, data: VisionData, bn_images: int, seed: int) -> ScoringBatches:
        return cls(
            recalibration_loader(data, bn_images, seed),
            data.loader(data.val, EVAL_BATCH_SIZE),
            data.loader(data.test, EVAL_BATCH_SIZE),
            bn_images,
            seed,
        )


def train_spos(
    supernet: NB201Supernet,
    preprocess: nn.Module,
    data: VisionData,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    weight_decay: float = 1e-4,
    *,
    runtime: Runtime | None = None,
) -> dict[str, float]:
    """Train ``supernet`` in place, one uniformly sampled cell per step (AdamW, cosine), on
    ``runtime`` (default: the supernet's device, fp32): the supernet is moved there, batches of
    the augmented training split come through the task's DataLoader, forwards run under its
    autocast (a gradient scaler for fp16).

    Returns ``supernet_train_loss`` (last epoch's mean) and ``supernet_train_seconds``.

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
    """
    runtime = runtime or Runtime(model_device(supernet))
    rng = random.Random(seed)
    torch.manual_seed(seed)
    runtime.prepare(supernet)
    preprocess = copy.deepcopy(preprocess).to(runtime.device)  # the caller's may be shared
    batches = loader(data.augmented_train, batch_size, seed, data)
    optimizer = torch.optim.AdamW(supernet.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(batches))
    scaler = runtime.grad_scaler()
    start = time.perf_counter()
    supernet.train()
    mean_loss = float("nan")
    for _ in range(epochs):
        # Summed on the device in float64 (as a Python float would): no wait per step.
        total = torch.zeros((), dtype=torch.float64, device=runtime.device)
        seen = 0
        for images, labels in batches:
            images, labels = runtime.to_device(images), runtime.to_device(labels)
            x = preprocess(images)
            with runtime.autocast():
                logits = supernet(x, path=sample_path(rng))
            loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += loss.detach().double() * len(labels)
            seen += len(labels)
        mean_loss = total.item() / seen
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"supernet training loss is {mean_loss}: lower lr")
    runtime.synchronize()
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
    *,
    runtime: Runtime | None = None,
    batches: ScoringBatches | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """The cell ``path`` with inherited weights, as a stand-alone model (preprocessing
    included, on ``runtime``'s device: by default the supernet's), and its ``val_accuracy``,
    ``val_loss``, ``params`` (see :func:`score_inherited`). The supernet is untouched."""
    runtime = runtime or Runtime(model_device(supernet))
    model = nn.Sequential(copy.deepcopy(preprocess), supernet.extract(path))
    metrics = score_inherited(
        model,
        data,
        seed,
        finetune_steps,
        finetune_lr,
        batch_size,
        bn_images,
        runtime=runtime,
        batches=batches,
    )
    return model, metrics


def score_inherited(
    model: nn.Module,
    data: VisionData,
    seed: int,
    finetune_steps: int = 0,
    finetune_lr: float = 1e-3,
    batch_size: int = 64,
    bn_images: int = 512,
    *,
    runtime: Runtime | None = None,
    batches: ScoringBatches | None = None,
) -> dict[str, float]:
    """Score a subnet extracted from a supernet (any kind): optionally ``finetune_steps`` AdamW
    steps on the training split, then BatchNorm statistics re-estimated on ``bn_images``
    training images, then ``val_accuracy``, ``val_loss`` and ``params``. ``model`` (with its
    preprocessing) is changed in place and moved to ``runtime``'s device (default: its own,
    fp32), where it is scored under the runtime's autocast. ``batches``: the
    :class:`ScoringBatches` of ``data`` for ``bn_images`` and ``seed``, when a caller scores
    many subnets (built here otherwise).

    Raises:
        ValueError: ``batches`` were built for another ``bn_images`` or ``seed``.
    """
    runtime = runtime or Runtime(model_device(model))
    runtime.prepare(model)
    if finetune_steps > 0:
        torch.manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=finetune_lr)
        scaler = runtime.grad_scaler()
        model.train()
        steps = 0
        while steps < finetune_steps:
            for images, labels in loader(data.augmented_train, batch_size, seed + steps, data):
                images, labels = runtime.to_device(images), runtime.to_device(labels)
                with runtime.autocast():
                    logits = model(images)
                loss = F.cross_entropy(logits.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                steps += 1
                if steps == finetune_steps:
                    break
    if batches is None:
        batches = ScoringBatches.of(data, bn_images, seed)
    elif (batches.bn_images, batches.seed) != (bn_images, seed):
        raise ValueError(
            f"scoring batches of bn_images={batches.bn_images}, seed={batches.seed} used to "
            f"score with bn_images={bn_images}, seed={seed}"
        )
    recalibrate_batchnorm(model, batches.bn, runtime=runtime)
    val_loss, val_accuracy = evaluate(model, batches.val, runtime=runtime)
    params = float(sum(p.numel() for p in model.parameters()))
    return {"val_accuracy": val_accuracy, "val_loss": val_loss, "params": params}
