"""The vision trial: build the config's model, train it on the task's images, score it.

The trained network is wrapped with its own preprocessing (resize to ``task.resolution``,
normalise with the training split's statistics), so the measured and logged model takes raw
images in [0, 1] at the dataset's native resolution.
"""

from __future__ import annotations

import math
import time

import mlflow
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Subset

from nas_plugin.hardware.cost import measure_configured_cost
from nas_plugin.models import build_model
from nas_plugin.pruning import EpochLoop
from nas_plugin.tasks.training import make_optimizer, seed_everything, set_threads
from nas_plugin.tasks.vision_data import ImageTensorDataset, VisionData, load_vision_data
from nas_plugin.tracking.model_logging import log_model

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
    (1-based) to the active MLflow run, if there is one; no run is started here. Before each
    evaluation, BatchNorm running statistics are re-estimated on up to
    ``train.bn_recalibration_images`` (default 2048, 0 = off) training images: after a few
    hundred steps the running averages still lag the weights, and short (low-fidelity) runs
    would otherwise score near chance in eval mode. With ``log_model`` and an active run, the
    trained model is logged with ``nas_plugin.tracking.model_logging.log_model``. Each epoch's
    metrics are reported to the sweep's pruner (``nas_plugin.pruning``): a pruned trial stops
    after that epoch, returns its last values and logs no model.

    Returns floats: ``val_accuracy``, ``val_loss``, ``test_accuracy``, ``test_loss``,
    ``train_loss`` (mean over the last epoch), ``params``, ``flops``, ``latency_ms``,
    ``peak_memory_mb`` (see ``measure_cost``; only ``params`` when ``hardware.measure`` is
    false), ``train_seconds`` (the epochs including their validation passes) and ``epochs``
    (those trained: fewer than ``train.epochs`` if the trial was pruned).

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
    """
    seed = int(cfg.seed)
    seed_everything(seed)
    train_cfg = cfg.train
    epochs, batch_size, lr = int(train_cfg.epochs), int(train_cfg.batch_size), float(train_cfg.lr)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(
            f"train.epochs = {epochs}, train.batch_size = {batch_size}, train.lr = {lr}: "
            "expected epochs >= 1, batch_size >= 1 and lr > 0"
        )
    set_threads(train_cfg)

    data = load_vision_data(cfg.task, float(train_cfg.get("train_fraction", 1.0)), seed)
    net = build_model(cfg.model, data.num_classes, data.in_chans)
    mean, std = channel_stats(data.train)
    model = nn.Sequential(Preprocess(int(cfg.task.resolution), mean, std), net)

    results: dict[str, float] = {}
    hardware = cfg.get("hardware") or {}
    if hardware.get("measure", True):
        results.update(measure_configured_cost(model, data.image_shape, hardware))
    else:
        results["params"] = float(sum(p.numel() for p in model.parameters()))

    loop = EpochLoop(epochs)
    train_loss, val_loss, val_accuracy, seconds = train(model, data, train_cfg, seed, loop)
    test_loss, test_accuracy = evaluate(model, data.test)
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
    if cfg.get("log_model", False) and mlflow.active_run() is not None and not loop.pruned:
        log_model(model, input_example(data.val))
    return results


def input_example(dataset: ImageTensorDataset) -> torch.Tensor:
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
) -> tuple[float, float, float, float]:
    """Train ``model`` in place on ``data.train`` with the vision trial's loop.

    ``train_cfg`` holds ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``optimizer``
    (see :func:`~nas_plugin.tasks.optim.make_optimizer`; a cosine schedule over all steps) and
    ``bn_recalibration_images``. After each epoch BatchNorm statistics are re-estimated
    (:func:`recalibrate_batchnorm`), the model is scored on ``data.val``, the epoch's metrics
    are logged to the active MLflow run (if any) and reported to ``loop`` (default
    ``EpochLoop(train_cfg.epochs)``: the sweep's pruner may stop it early).

    Returns (last epoch's mean train loss, val loss, val accuracy, seconds).

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
    """
    epochs, batch_size = int(train_cfg.epochs), int(train_cfg.batch_size)
    loop = EpochLoop(epochs) if loop is None else loop
    loader = DataLoader(
        data.train,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        # BatchNorm cannot train on a batch of one image whose features are pooled to 1x1.
        drop_last=len(data.train) % batch_size == 1,
    )
    if len(loader) == 0:
        raise ValueError(
            f"the training split has {len(data.train)} image(s): too few to train on; raise "
            "train.train_fraction or add data"
        )
    optimizer = make_optimizer(model, train_cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    log = mlflow.active_run() is not None
    recalibration_images = int(train_cfg.get("bn_recalibration_images", BN_RECALIBRATION_IMAGES))

    start = time.perf_counter()
    for epoch in loop:
        model.train()
        total_loss, seen = 0.0, 0
        for step, (images, labels) in enumerate(loader):
            loss = F.cross_entropy(model(images), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss is {loss.item()} at epoch {epoch}, batch {step}: the model "
                    f"diverged; lower train.lr (now {train_cfg.lr}) or change the architecture"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(labels)
            seen += len(labels)
        train_loss = total_loss / seen
        recalibrate_batchnorm(model, data.train, recalibration_images, seed)
        val_loss, val_accuracy = evaluate(model, data.val)
        metrics = {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy}
        if log:
            mlflow.log_metrics(metrics, step=epoch)
        loop.report(metrics)
    return train_loss, val_loss, val_accuracy, time.perf_counter() - start


@torch.no_grad()
def evaluate(model: nn.Module, dataset: ImageTensorDataset) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on ``dataset``.

    Raises:
        FloatingPointError: the loss is NaN or infinite (a diverged model).
    """
    model.eval()
    total_loss, correct = 0.0, 0
    for images, labels in DataLoader(dataset, batch_size=EVAL_BATCH_SIZE):
        logits = model(images)
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == labels).sum())
    loss = total_loss / len(dataset)
    if not math.isfinite(loss):
        raise FloatingPointError(f"evaluation loss is {loss}: the trained model diverged")
    return loss, correct / len(dataset)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, train: ImageTensorDataset, images: int, seed: int
) -> None:
    """Replace BatchNorm running statistics by their average over ``images`` training images.

    The images are a seeded random subset of ``train``; only the norms run in train mode (the
    rest of the model in eval mode). ``images <= 0`` leaves the statistics as they are. Used
    after training and on weights inherited from a supernet, whose running statistics mix the
    statistics of many subnets.
    """
    batchnorms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)  # timm's subclass them
    norms = [m for m in model.modules() if isinstance(m, batchnorms)]
    if not norms or images <= 0:
        return
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: a cumulative average over all batches seen
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    # Only the norms in train mode: dropout and drop-path would skew the statistics.
    model.eval()
    for norm in norms:
        norm.train()
    for batch, _ in DataLoader(Subset(train, order[:images].tolist()), batch_size=EVAL_BATCH_SIZE):
        if len(batch) > 1:  # a single image has no batch statistics
            model(batch)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


def channel_stats(train: ImageTensorDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the training images, in [0, 1] units."""
    scale = 255.0 if train.images.dtype == torch.uint8 else 1.0
    total = torch.zeros(train.images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    # In chunks: CIFAR-10's training images as float64 would take 1.1 GB at once.
    for chunk in train.images.split(4096):
        chunk = chunk.double() / scale
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = train.images.numel() / train.images.shape[1]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.float().clamp_min(1e-6)  # a constant channel must not divide by 0
