"""The vision trial: build the config's model, train it on the task's images, score it.

The trained network is wrapped with its own preprocessing (resize to ``task.resolution``,
normalise with the training split's statistics), so the measured and logged model takes raw
images in [0, 1] at the dataset's native resolution.

Training, BatchNorm re-estimation and evaluation run on ``train.device`` at ``train.precision``
(:class:`~nas_plugin.hardware.device.Runtime`), reading batches through the task's DataLoaders
(:meth:`~nas_plugin.tasks.vision_data.VisionData.loader`); the logged model is moved to the CPU
first, so it loads on any machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from nas_plugin.hardware.device import Runtime
from nas_plugin.models import build_model
from nas_plugin.tasks.reporting import EpochLoop, current_reporter
from nas_plugin.tasks.training import (
    check_finite_loss,
    cosine_optimizer,
    model_cost,
    optimizer_step,
    start_trial,
    training_batches,
)
from nas_plugin.tasks.vision_data import (
    STATS_IMAGES,
    ImageDataset,
    ImageTensorDataset,
    VisionData,
    load_vision_data,
)

EVAL_BATCH_SIZE = 512
# Images used to re-estimate BatchNorm statistics before each evaluation (as SPOS and OFA do).
BN_RECALIBRATION_IMAGES = 2048
INPUT_EXAMPLE_SIZE = 4


class Preprocess(nn.Module):
    """Resize N x C x H x W images in [0, 1] to ``resolution`` and normalise each channel."""

    def __init__(self, resolution: int, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.resolution = resolution
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.resolution, self.resolution):
            images = F.interpolate(
                images,
                size=(self.resolution, self.resolution),
                mode="bilinear",
                align_corners=False,
                antialias=True,  # only matters when shrinking; avoids aliasing then
            )
        return (images - self.mean) / self.std


def run_vision_trial(cfg: DictConfig) -> dict[str, float]:
    """Train ``cfg.model`` on ``cfg.task`` and return its scores and hardware cost.

    Per epoch, ``train_loss``, ``val_loss`` and ``val_accuracy`` are logged at step = epoch
    (1-based) through the current reporter (:mod:`nas_plugin.tasks.reporting`; in a sweep, the
    trial's MLflow run); no run is started here. Before each evaluation, BatchNorm running
    statistics are re-estimated on up to ``train.bn_recalibration_images`` (default 2048, 0 =
    off) training images: after a few hundred steps the running averages still lag the weights,
    and short (low-fidelity) runs would otherwise score near chance in eval mode. With
    ``log_model`` and a recording reporter, the trained model is logged through it (in a sweep:
    ``nas_plugin.tracking.model_logging.log_model``). Each epoch's metrics are reported to the
    sweep's pruner through it too: a pruned trial stops after that epoch, returns its last
    values and logs no model.

    Returns floats: ``val_accuracy``, ``val_loss``, ``test_accuracy``, ``test_loss``,
    ``train_loss`` (mean over the last epoch), ``params``, ``flops``, ``latency_ms``,
    ``peak_memory_mb`` (see ``measure_cost``; only ``params`` when ``hardware.measure`` is
    false), ``train_seconds`` (the epochs including their validation passes) and ``epochs``
    (those trained: fewer than ``train.epochs`` if the trial was pruned).

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
    """
    seed, epochs, runtime = start_trial(cfg)
    train_cfg, reporter = cfg.train, current_reporter()

    data = load_vision_data(cfg.task, float(train_cfg.get("train_fraction", 1.0)), seed)
    net = build_model(cfg.model, data.num_classes, data.in_chans)
    mean, std = channel_stats(data.train, loader=data.loader)
    model = runtime.prepare(nn.Sequential(Preprocess(int(cfg.task.resolution), mean, std), net))

    results = model_cost(model, data.image_shape, cfg.get("hardware"))

    loop = EpochLoop(epochs)
    train_loss, val_loss, val_accuracy, seconds = train(model, data, train_cfg, seed, loop, runtime)
    test_loss, test_accuracy = evaluate(
        model, data.loader(data.test, EVAL_BATCH_SIZE), runtime=runtime
    )
    results.update(
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        test_accuracy=test_accuracy,
        test_loss=test_loss,
        train_loss=train_loss,
        train_seconds=seconds,
        epochs=float(loop.epochs_done),
    )

    # A pruned trial's model is not worth the upload: it is never the one registered.
    if cfg.get("log_model", False) and reporter.recording and not loop.pruned:
        reporter.log_image_model(model, input_example(data.val))
    return results


def input_example(dataset: ImageDataset) -> torch.Tensor:
    """A few real images of ``dataset`` (raw, as the logged model takes them): the example
    batch ``log_model`` stores with a model and infers its signature from."""
    count = min(INPUT_EXAMPLE_SIZE, len(dataset))
    return torch.stack([dataset[i][0] for i in range(count)])


def train(
    model: nn.Module,
    data: VisionData,
    train_cfg: DictConfig,
    seed: int,
    loop: EpochLoop | None = None,
    runtime: Runtime | None = None,
) -> tuple[float, float, float, float]:
    """Train ``model`` in place on ``data.train`` with the vision trial's loop.

    ``train_cfg`` holds ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``optimizer``
    (see :func:`~nas_plugin.tasks.optim.make_optimizer`; a cosine schedule over all steps) and
    ``bn_recalibration_images``. Batches come through ``data.loader`` with the task's
    augmentation; ``runtime`` (default: ``Runtime.from_config(train_cfg)``) moves the model
    and batches to its device and sets autocast, the fp16 gradient scaler, channels-last and
    ``torch.compile``. After each epoch BatchNorm statistics are re-estimated
    (:func:`recalibrate_batchnorm`), the model is scored on ``data.val``, the epoch's metrics
    are given to the current reporter and reported to ``loop`` (default
    ``EpochLoop(train_cfg.epochs)``: the sweep's pruner may stop it early).

    Returns (last epoch's mean train loss, val loss, val accuracy, seconds).

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
    """
    epochs, batch_size = int(train_cfg.epochs), int(train_cfg.batch_size)
    loop = EpochLoop(epochs) if loop is None else loop
    runtime = Runtime.from_config(train_cfg) if runtime is None else runtime
    model = runtime.prepare(model)
    forward = runtime.compiled(model)
    loader = training_batches(data, batch_size, seed)
    optimizer, scheduler = cosine_optimizer(model, train_cfg, epochs * len(loader))
    scaler = runtime.grad_scaler()
    reporter = current_reporter()
    recalibration_images = int(train_cfg.get("bn_recalibration_images", BN_RECALIBRATION_IMAGES))
    # Built once: with task.num_workers > 0 their worker processes persist across epochs.
    val_batches = data.loader(data.val, EVAL_BATCH_SIZE)
    recalibration_batches = recalibration_loader(data, recalibration_images, seed)

    start = time.perf_counter()
    for epoch in loop:
        model.train()
        # Summed on the device: a .item() per step would wait for the device every step.
        total_loss, seen = torch.zeros((), device=runtime.device), 0
        for images, labels in loader:
            images, labels = runtime.to_device(images), runtime.to_device(labels)
            with runtime.autocast():
                loss = F.cross_entropy(forward(images), labels)
            optimizer_step(loss, optimizer, scaler, scheduler)
            total_loss += loss.detach().float() * len(labels)
            seen += len(labels)
        train_loss = total_loss.item() / seen
        check_finite_loss(train_loss, epoch, train_cfg)
        recalibrate_batchnorm(model, recalibration_batches, runtime=runtime)
        val_loss, val_accuracy = evaluate(model, val_batches, runtime=runtime)
        metrics = {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy}
        reporter.log_metrics(metrics, step=epoch)
        loop.report(metrics)
    runtime.synchronize()
    return train_loss, val_loss, val_accuracy, time.perf_counter() - start


def recalibration_loader(data: VisionData, images: int, seed: int) -> DataLoader | None:
    """Batches of a seeded random subset of ``images`` unaugmented training images for
    :func:`recalibrate_batchnorm` (None when ``images <= 0``)."""
    if images <= 0:
        return None
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    return data.loader(Subset(data.train, order[:images].tolist()), EVAL_BATCH_SIZE)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Dataset | Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    runtime: Runtime | None = None,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on ``batches``: a dataset (read
    in batches of ``EVAL_BATCH_SIZE`` in this process) or an iterable of (images, labels), e.g.
    a split's DataLoader. Runs on ``runtime``'s device and autocast, by default on the device
    the model's parameters are on, in fp32.

    Raises:
        FloatingPointError: the loss is NaN or infinite (a diverged model).
    """
    runtime = runtime or Runtime(model_device(model))
    if isinstance(batches, Dataset):
        batches = DataLoader(batches, batch_size=EVAL_BATCH_SIZE)
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=runtime.device)
    correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
    count = 0
    for images, labels in batches:
        images, labels = runtime.to_device(images), runtime.to_device(labels)
        with runtime.autocast():
            logits = model(images)
        logits = logits.float()
        total_loss += F.cross_entropy(logits, labels, reduction="sum").double()
        correct += (logits.argmax(dim=1) == labels).sum()
        count += len(labels)
    loss = total_loss.item() / count
    if not math.isfinite(loss):
        raise FloatingPointError(f"evaluation loss is {loss}: the trained model diverged")
    return loss, correct.item() / count


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    source: ImageDataset | Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
    images: int | None = None,
    seed: int = 0,
    *,
    runtime: Runtime | None = None,
) -> None:
    """Replace BatchNorm running statistics by their average over training images.

    ``source`` is either a training dataset, of which a seeded (``seed``) random subset of
    ``images`` images is used, or ready batches (:func:`recalibration_loader`). Only the norms
    run in train mode (the rest of the model in eval mode), on ``runtime``'s device (default:
    the model's). ``images <= 0`` or ``source=None`` leaves the statistics as they are. Used
    after training and on weights inherited from a supernet, whose running statistics mix the
    statistics of many subnets.
    """
    batchnorms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)  # timm's subclass them
    norms = [m for m in model.modules() if isinstance(m, batchnorms)]
    if not norms or source is None or (images is not None and images <= 0):
        return
    if isinstance(source, Dataset):
        order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))
        subset = Subset(source, order[: images or len(source)].tolist())
        source = DataLoader(subset, batch_size=EVAL_BATCH_SIZE)
    runtime = runtime or Runtime(model_device(model))
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: a cumulative average over all batches seen
    # Only the norms in train mode: dropout and drop-path would skew the statistics.
    model.eval()
    for norm in norms:
        norm.train()
    for batch, _ in source:
        if len(batch) > 1:  # a single image has no batch statistics
            with runtime.autocast():
                model(runtime.to_device(batch))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU if it has none)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def channel_stats(
    train: ImageDataset, *, loader=None, max_images: int = STATS_IMAGES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the training images, in [0, 1] units.

    In-memory images use all of them. A streamed split (image files) uses a fixed-seed random
    sample of ``max_images``, read through ``loader`` (e.g. ``VisionData.loader``, to decode
    in its workers): normalising statistics need no more, and the folder is not read twice.
    """
    if isinstance(train, ImageTensorDataset):
        chunks: Iterable[torch.Tensor] = (
            chunk.double() / (255.0 if chunk.dtype == torch.uint8 else 1.0)
            # In chunks: CIFAR-10's training images as float64 would take 1.1 GB at once.
            for chunk in train.images.split(4096)
        )
    else:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
        sample = Subset(train, order[:max_images].tolist())
        batches = (loader or _plain_loader)(sample, EVAL_BATCH_SIZE)
        chunks = (images.double() for images, _ in batches)
    channels = train.image_shape[0]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for chunk in chunks:
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
        count += chunk.numel() // channels
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.float().clamp_min(1e-6)  # a constant channel must not divide by 0


def _plain_loader(dataset: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size)
