"""The segmentation trial: build the config's network, train it on the task's masks, score it.

The trained network is wrapped with its preprocessing (resize to ``task.resolution``, normalise
with the training split's statistics) and a final resize of the logits back to the input's
size, so the measured and logged model takes raw images in [0, 1] and returns per-pixel logits
N x classes x H x W for N x C x H x W images. A low-fidelity ``task.resolution`` only changes
what the network sees; masks are always scored at the data's own size.

Scores: mean intersection-over-union over the classes (``miou``; a class absent from both the
masks and the predictions of a split is left out of the mean), each class's IoU
(``iou_<class>``) and pixel accuracy, from one confusion matrix per split (``torch.bincount``).
Pixels equal to ``task.ignore_index`` are neither trained on nor scored.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from nas_plugin.hardware.device import Runtime
from nas_plugin.models import build_model
from nas_plugin.tasks.reporting import EpochLoop, current_reporter
from nas_plugin.tasks.segmentation_data import (
    SegmentationData,
    SegmentationDataset,
    load_segmentation_data,
)
from nas_plugin.tasks.training import (
    check_finite_loss,
    cosine_optimizer,
    model_cost,
    optimizer_step,
    start_trial,
    training_batches,
)
from nas_plugin.tasks.vision import Preprocess, model_device, recalibrate_batchnorm

EVAL_BATCH_SIZE = 256
BN_RECALIBRATION_IMAGES = 1024
INPUT_EXAMPLE_SIZE = 4


class SegmentationModel(nn.Module):
    """Raw images in [0, 1] (any size) -> :class:`Preprocess` -> ``net`` -> logits resized
    (bilinear) to the input's height and width."""

    def __init__(self, preprocess: Preprocess, net: nn.Module) -> None:
        super().__init__()
        self.preprocess, self.net = preprocess, net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(self.preprocess(images))
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(
                logits, size=images.shape[-2:], mode="bilinear", align_corners=False
            )
        return logits


def run_segmentation_trial(cfg: DictConfig) -> dict[str, float]:
    """Train ``cfg.model`` on ``cfg.task`` (a segmentation task) and return scores and cost.

    Per epoch, ``train_loss``, ``val_loss``, ``val_miou`` and ``val_pixel_accuracy`` are logged
    at step = epoch through the current reporter (:mod:`nas_plugin.tasks.reporting`) and
    reported to the sweep's pruner; a pruned trial stops there and logs no model. BatchNorm
    statistics are re-estimated on up to ``train.bn_recalibration_images`` training images
    before each evaluation. With ``log_model`` and a recording reporter, the trained model (raw
    images in, per-pixel logits out) is
    logged with an input example and its signature.

    Returns floats: ``val_miou``, ``val_pixel_accuracy``, ``val_loss``, ``val_iou_<class>`` per
    class, the same for ``test_``, ``train_loss``, ``params``, ``flops``, ``latency_ms``,
    ``peak_memory_mb`` (only ``params`` when ``hardware.measure`` is false), ``train_seconds``
    and ``epochs`` (those trained).

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
        ValueError: a bad config value, named in the message.
    """
    seed, epochs, runtime = start_trial(cfg)
    train_cfg, reporter = cfg.train, current_reporter()

    data = load_segmentation_data(cfg.task, float(train_cfg.get("train_fraction", 1.0)), seed)
    net = build_model(cfg.model, data.num_classes, data.in_chans)
    mean, std = channel_stats(data)
    preprocess = Preprocess(int(cfg.task.resolution), mean, std)
    model = runtime.prepare(SegmentationModel(preprocess, net))

    results = model_cost(model, data.image_shape, cfg.get("hardware"))

    loop = EpochLoop(epochs)
    train_loss, val_scores, seconds = train(model, data, train_cfg, seed, loop, runtime)
    test_scores = evaluate(model, data.loader(data.test, EVAL_BATCH_SIZE), data, runtime=runtime)
    results.update({f"val_{k}": v for k, v in val_scores.items()})
    results.update({f"test_{k}": v for k, v in test_scores.items()})
    results.update(train_loss=train_loss, train_seconds=seconds, epochs=float(loop.epochs_done))

    if cfg.get("log_model", False) and reporter.recording and not loop.pruned:
        reporter.log_image_model(model, input_example(data.val))
    return results


def input_example(dataset: SegmentationDataset) -> torch.Tensor:
    """A few raw images of ``dataset``: the batch ``log_model`` stores and infers the
    signature from."""
    count = min(INPUT_EXAMPLE_SIZE, len(dataset))
    return torch.stack([dataset[i][0] for i in range(count)])


def train(
    model: nn.Module,
    data: SegmentationData,
    train_cfg: DictConfig,
    seed: int,
    loop: EpochLoop | None = None,
    runtime: Runtime | None = None,
) -> tuple[float, dict[str, float], float]:
    """Train ``model`` in place on ``data.train`` (per-pixel cross-entropy, AdamW or SGD with a
    cosine schedule), scoring it on ``data.val`` after each epoch; see
    :func:`run_segmentation_trial`. Returns (last epoch's mean train loss, last val scores,
    seconds)."""
    epochs, batch_size = int(train_cfg.epochs), int(train_cfg.batch_size)
    loop = EpochLoop(epochs) if loop is None else loop
    runtime = Runtime.from_config(train_cfg) if runtime is None else runtime
    model = runtime.prepare(model)
    forward = runtime.compiled(model)
    loader = training_batches(data, batch_size, seed)
    optimizer, scheduler = cosine_optimizer(model, train_cfg, epochs * len(loader))
    scaler = runtime.grad_scaler()
    reporter = current_reporter()
    recalibration = recalibration_loader(
        data, int(train_cfg.get("bn_recalibration_images", BN_RECALIBRATION_IMAGES)), seed
    )
    val_batches = data.loader(data.val, EVAL_BATCH_SIZE)

    start = time.perf_counter()
    scores: dict[str, float] = {}
    for epoch in loop:
        model.train()
        total_loss, seen = torch.zeros((), device=runtime.device), 0
        for images, masks in loader:
            images, masks = runtime.to_device(images), runtime.to_device(masks)
            with runtime.autocast():
                loss = F.cross_entropy(forward(images), masks, ignore_index=data.ignore_index)
            optimizer_step(loss, optimizer, scaler, scheduler)
            total_loss += loss.detach().float() * len(images)
            seen += len(images)
        train_loss = total_loss.item() / seen
        check_finite_loss(train_loss, epoch, train_cfg)
        recalibrate_batchnorm(model, recalibration, runtime=runtime)
        scores = evaluate(model, val_batches, data, runtime=runtime)
        metrics = {
            "train_loss": train_loss,
            "val_loss": scores["loss"],
            "val_miou": scores["miou"],
            "val_pixel_accuracy": scores["pixel_accuracy"],
        }
        reporter.log_metrics(metrics, step=epoch)
        loop.report(metrics)
    runtime.synchronize()
    return train_loss, scores, time.perf_counter() - start


def recalibration_loader(data: SegmentationData, images: int, seed: int) -> DataLoader | None:
    """See :meth:`~nas_plugin.tasks.dense_data.DenseSplits.recalibration_loader`."""
    return data.recalibration_loader(images, seed, EVAL_BATCH_SIZE)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    data: SegmentationData,
    *,
    runtime: Runtime | None = None,
) -> dict[str, float]:
    """``loss`` (mean per-pixel cross-entropy), ``miou``, ``pixel_accuracy`` and
    ``iou_<class>`` of ``model`` in eval mode on ``batches`` of (images, masks)."""
    runtime = runtime or Runtime(model_device(model))
    model.eval()
    classes = data.num_classes
    confusion = torch.zeros(classes * classes, dtype=torch.int64, device=runtime.device)
    total_loss = torch.zeros((), dtype=torch.float64, device=runtime.device)
    pixels = 0
    for images, masks in batches:
        images, masks = runtime.to_device(images), runtime.to_device(masks)
        with runtime.autocast():
            logits = model(images)
        logits = logits.float()
        valid = masks != data.ignore_index
        total_loss += F.cross_entropy(
            logits, masks, ignore_index=data.ignore_index, reduction="sum"
        ).double()
        truth, predicted = masks[valid], logits.argmax(dim=1)[valid]
        confusion += torch.bincount(truth * classes + predicted, minlength=classes * classes)
        pixels += int(valid.sum())
    if pixels == 0:
        raise ValueError("the split has no scored pixels: every mask pixel is task.ignore_index")
    loss = total_loss.item() / pixels
    if not math.isfinite(loss):
        raise FloatingPointError(f"evaluation loss is {loss}: the trained model diverged")
    return {"loss": loss, **iou_scores(confusion.reshape(classes, classes).cpu(), data.class_names)}


def iou_scores(confusion: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    """``miou``, ``pixel_accuracy`` and ``iou_<class>`` from a confusion matrix (rows: truth,
    columns: prediction). A class in neither the truth nor the predictions has no IoU: it has
    no ``iou_<class>`` and the mean leaves it out."""
    confusion = confusion.double()
    hits = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - hits
    iou = torch.where(union > 0, hits / union.clamp_min(1), torch.nan)
    scores = {
        "miou": float(iou.nanmean()),
        "pixel_accuracy": float(hits.sum() / confusion.sum()),
    }
    for name, value in zip(class_names, iou.tolist(), strict=True):
        if not math.isnan(value):
            scores[f"iou_{metric_safe(name)}"] = value
    return scores


def metric_safe(name: str) -> str:
    """``name`` as part of an MLflow metric key (letters, digits, ``_ - . /``)."""
    return re.sub(r"[^A-Za-z0-9_\-./]", "_", name)


def channel_stats(data: SegmentationData) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of (a fixed-seed sample of) the training images."""
    return data.channel_stats(EVAL_BATCH_SIZE)
