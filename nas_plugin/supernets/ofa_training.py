"""Progressive shrinking (Once-for-All): train the elastic mbconv supernet, then score subnets.

Phases, each with its own optimizer and cosine schedule, in OFA's order:

1. ``full``: the largest network only;
2. ``kernel``: a random kernel size per stage, largest expansion and depth;
3. ``depth``: random kernels and depths;
4. ``expand``: random kernels, depths and expansion ratios (channels importance-sorted first
   when ``sort_channels``), and, where the space makes them elastic, widths (``channels``,
   ``width_mult``), squeeze-excite and activation.

Every step samples ``subnets_per_step`` subnets and accumulates their gradients (OFA uses 2-4).
Optionally (``distill`` > 0), as in OFA, shrinking phases distil from the largest network as
the ``full`` phase left it (a frozen copy; its softmax outputs as soft targets). Off by
default: on digits it lowered every subnet's inherited accuracy (the teacher has fit the small
training set to near one-hot outputs).
Phases 2-4 use the lower ``shrink_lr`` so the shared weights are not destroyed. A subnet is
scored by extracting it, re-estimating its BatchNorm statistics on training images (its
channels' statistics differ from the largest network's) and evaluating it.

Training and scoring run on a :class:`~nas_plugin.hardware.device.Runtime` (the app's
``train.device`` / ``train.precision`` / ``train.channels_last``): the supernet, the teacher and
the batches on its device, forwards under its autocast (losses in fp32, a gradient scaler for
fp16). ``train.compile`` does not apply: the supernet runs another subnet every step.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_plugin.hardware.device import Runtime
from nas_plugin.oneshot.spos import ScoringBatches
from nas_plugin.space import Encoding
from nas_plugin.supernets.elastic_mbconv import ElasticConfigError, ElasticMBConv

# The vision trial's own building blocks: same preprocessing, BN recalibration and scoring.
from nas_plugin.tasks.vision import (
    EVAL_BATCH_SIZE,
    Preprocess,
    channel_stats,
    evaluate,
    model_device,
    recalibrate_batchnorm,
)
from nas_plugin.tasks.vision_data import VisionData

PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("full", ()),
    ("kernel", ("kernel",)),
    ("depth", ("kernel", "depth")),
    # Elastic width, squeeze-excite and activation (when the space has them) join last.
    ("expand", ("kernel", "depth", "expansion", "channels", "se", "width_mult", "activation")),
)


def wrap(supernet: ElasticMBConv, data: VisionData, resolution: int) -> nn.Sequential:
    """``Preprocess`` (resize + the training split's normalisation) followed by the supernet."""
    mean, std = channel_stats(data.train, loader=data.loader)
    return nn.Sequential(Preprocess(resolution, mean, std), supernet)


def train_progressive_shrinking(
    model: nn.Sequential,
    data: VisionData,
    train_cfg: Mapping[str, Any],
    seed: int,
    on_epoch: Callable[[str, int, float], None] | None = None,
    *,
    runtime: Runtime | None = None,
) -> dict[str, float]:
    """Train ``model`` (``wrap``'s output) phase by phase on ``runtime`` (default:
    ``Runtime.from_config(train_cfg)``; ``model`` is moved to its device); return seconds per
    phase.

    ``train_cfg``: ``epochs`` (a mapping phase -> epochs, 0 skips a phase), ``batch_size``,
    ``lr``, ``shrink_lr``, ``weight_decay``, ``subnets_per_step``, ``sort_channels``,
    ``distill`` (weight of the distillation loss from the largest network, 0: off).
    ``on_epoch(phase, global_epoch, mean_loss)`` is called after every epoch. Batches of the
    augmented training split come through the task's DataLoader (built once: its workers
    persist across phases).

    Raises:
        FloatingPointError: an epoch's loss is NaN or infinite.
    """
    supernet: ElasticMBConv = model[1]
    epochs = phase_epochs(train_cfg.get("epochs"))
    batch_size = int(train_cfg.get("batch_size", 64))
    per_step = int(train_cfg.get("subnets_per_step", 2))
    distill = float(train_cfg.get("distill", 0.0))
    if batch_size < 1 or per_step < 1:
        raise ElasticConfigError(
            f"train.batch_size = {batch_size}, train.subnets_per_step = {per_step}: both must "
            "be >= 1"
        )
    runtime = Runtime.from_config(train_cfg) if runtime is None else runtime
    rng = random.Random(seed)
    torch.manual_seed(seed)
    runtime.prepare(model)
    scaler = runtime.grad_scaler()
    loader = data.loader(
        data.augmented_train,
        batch_size,
        shuffle=True,
        seed=seed,
        drop_last=len(data.train) % batch_size == 1,  # BatchNorm needs > 1 image
    )
    seconds: dict[str, float] = {}
    teacher: nn.Sequential | None = None
    global_epoch = 0
    for phase, elastic in PHASES:
        if epochs[phase] == 0:
            continue
        start = time.perf_counter()
        if phase == "expand" and train_cfg.get("sort_channels", True):
            supernet.sort_channels()
        lr = float(train_cfg["lr"] if phase == "full" else train_cfg.get("shrink_lr", 0.005))
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=lr, weight_decay=float(train_cfg.get("weight_decay", 0.0))
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs[phase] * len(loader)
        )
        samples = 1 if phase == "full" else per_step
        if phase != "full" and distill > 0 and teacher is None:
            teacher = _teacher(model)  # the largest network as trained by the `full` phase
        for _ in range(epochs[phase]):
            model.train()
            # Summed on the device in float64 (as Python floats would be): no wait per step.
            total = torch.zeros((), dtype=torch.float64, device=runtime.device)
            seen = 0
            for images, labels in loader:
                images, labels = runtime.to_device(images), runtime.to_device(labels)
                optimizer.zero_grad(set_to_none=True)
                soft = None
                if teacher is not None:
                    with torch.no_grad(), runtime.autocast():
                        soft = F.softmax(teacher(images).float(), dim=1)
                for _ in range(samples):
                    supernet.set_active(supernet.space.sample(rng, elastic))
                    with runtime.autocast():
                        logits = model(images)
                    logits = logits.float()
                    loss = F.cross_entropy(logits, labels)
                    if soft is not None:
                        # OFA's distillation: cross-entropy against the largest net's outputs.
                        loss = loss + distill * F.cross_entropy(logits, soft)
                    scaler.scale(loss / samples).backward()
                    total += loss.detach().double() * len(labels) / samples
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                seen += len(labels)
            mean_loss = total.item() / seen
            if not math.isfinite(mean_loss):
                raise FloatingPointError(
                    f"supernet loss is {mean_loss} in phase {phase!r}: lower train.lr / "
                    "train.shrink_lr"
                )
            global_epoch += 1
            if on_epoch is not None:
                on_epoch(phase, global_epoch, mean_loss)
        seconds[phase] = time.perf_counter() - start
    supernet.set_active(supernet.space.largest())
    return seconds


def _teacher(model: nn.Sequential) -> nn.Sequential:
    """A frozen copy of the current largest network (OFA distils every subnet from it)."""
    teacher = copy.deepcopy(model).eval()
    teacher[1].set_active(teacher[1].space.largest())
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def extract_model(model: nn.Sequential, arch: Mapping[str, Any] | Encoding) -> nn.Sequential:
    """The standalone ``Preprocess`` + timm subnet for ``arch`` (eval mode)."""
    supernet: ElasticMBConv = model[1]
    return nn.Sequential(copy.deepcopy(model[0]), supernet.extract(arch)).eval()


def score_subnet(
    model: nn.Sequential,
    arch: Mapping[str, Any] | Encoding,
    data: VisionData,
    bn_images: int,
    seed: int,
    *,
    runtime: Runtime | None = None,
    batches: ScoringBatches | None = None,
) -> tuple[nn.Sequential, dict[str, float]]:
    """Extract ``arch``, recalibrate its BatchNorm on ``bn_images`` training images, score it,
    on ``runtime`` (default: the supernet's device, fp32) with ``batches`` (the
    :class:`~nas_plugin.oneshot.spos.ScoringBatches` of ``bn_images`` and ``seed``, built once
    by a caller that scores many subnets; built here otherwise).

    Returns the extracted model (on the runtime's device) and ``val_accuracy``, ``val_loss``
    (inherited weights).
    """
    runtime = runtime or Runtime(model_device(model))
    batches = batches or ScoringBatches.of(data, bn_images, seed)
    sub = runtime.prepare(extract_model(model, arch))
    recalibrate_batchnorm(sub, batches.bn, runtime=runtime)
    val_loss, val_accuracy = evaluate(sub, batches.val, runtime=runtime)
    return sub, {"val_accuracy": val_accuracy, "val_loss": val_loss}


def score_on_test(
    model: nn.Module,
    data: VisionData,
    *,
    runtime: Runtime | None = None,
    batches: ScoringBatches | None = None,
) -> dict[str, float]:
    """``test_accuracy``, ``test_loss`` of ``model`` on ``runtime`` (default: its device),
    reading ``batches.test`` when given."""
    test = batches.test if batches is not None else data.loader(data.test, EVAL_BATCH_SIZE)
    test_loss, test_accuracy = evaluate(model, test, runtime=runtime)
    return {"test_accuracy": test_accuracy, "test_loss": test_loss}


def phase_epochs(value: Any) -> dict[str, int]:
    names = [name for name, _ in PHASES]
    if not isinstance(value, Mapping):
        raise ElasticConfigError(
            f"train.epochs = {value!r} is not allowed: expected a mapping of {', '.join(names)} "
            "-> epochs (0 skips a phase)"
        )
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise ElasticConfigError(
            f"train.epochs has unknown phase(s) {unknown}: allowed {', '.join(names)}"
        )
    epochs = {}
    for name in names:
        count = value.get(name, 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ElasticConfigError(
                f"train.epochs.{name} = {count!r} is not allowed: expected an integer >= 0"
            )
        epochs[name] = count
    if epochs["full"] == 0:
        raise ElasticConfigError("train.epochs.full = 0 is not allowed: OFA starts from it")
    return epochs
