"""The detection trial: build the config's detector, train it on the task's boxes, score it.

The detector is torchvision's FCOS (``nas_plugin.models.spinenet``); its own transform resizes
images to ``task.resolution`` squared, normalises them with the training split's statistics and
maps the boxes back to the input's pixels, so a low-fidelity ``task.resolution`` only changes
what the network sees. :class:`DetectionModel` wraps it for measuring and logging: raw images
N x C x H x W in [0, 1] in, a padded float tensor N x D x 6 out (D = ``model.head.detections``),
each row ``x1, y1, x2, y2, score, label`` in input pixels, best score first; rows past an
image's detections are ``0, 0, 0, 0, 0, -1``.

Scores: COCO's box mAP from torchmetrics' ``MeanAveragePrecision`` (pycocotools backend):
``map`` (mAP@[.5:.95]), ``map_50``, ``map_75``, ``mar_100`` and ``ap_<class>`` (mAP@[.5:.95]
of each class present in the split) on val and test.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from nas_plugin.hardware.device import Runtime
from nas_plugin.models import build_model
from nas_plugin.tasks.detection_data import (
    DetectionData,
    DetectionDataset,
    Target,
    load_detection_data,
)
from nas_plugin.tasks.reporting import EpochLoop, current_reporter
from nas_plugin.tasks.segmentation import metric_safe
from nas_plugin.tasks.training import (
    check_finite_loss,
    cosine_optimizer,
    model_cost,
    optimizer_step,
    start_trial,
    training_batches,
)
from nas_plugin.tasks.vision import model_device, recalibrate_batchnorm

EVAL_BATCH_SIZE = 64
BN_RECALIBRATION_IMAGES = 512
INPUT_EXAMPLE_SIZE = 4
NO_LABEL = -1.0  # the label of a padding row in DetectionModel's output


class PyramidFeatures(nn.Module):
    """``model``'s transform and backbone alone: what BatchNorm re-estimation needs to run
    (FCOS's head has GroupNorm only, and its box decoding and NMS would only cost time)."""

    def __init__(self, model: DetectionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.features(images)


class DetectionModel(nn.Module):
    """Raw images in [0, 1] -> ``detector`` (its transform set to the task's resolution and
    channel statistics) -> N x ``detections`` x 6 (boxes, score, label; padded)."""

    # FCOS's score threshold and NMS keep a data-dependent number of boxes, which torch.export
    # cannot trace: log_model pickles this model without trying.
    supports_torch_export = False

    def __init__(
        self, detector: nn.Module, resolution: int, mean: torch.Tensor, std: torch.Tensor
    ) -> None:
        super().__init__()
        detector.transform = GeneralizedRCNNTransform(
            resolution, resolution, mean.tolist(), std.tolist()
        )
        self.detector = detector
        self.detections = int(detector.detections_per_img)

    def detect(self, images: torch.Tensor) -> list[Target]:
        """{boxes, labels, scores} per image, boxes in the input's pixels, labels 1..K (eval
        mode)."""
        # The detector's sigmoid outputs are labels 0..K-1: none is spent on "no object".
        return [{**found, "labels": found["labels"] + 1} for found in self.detector(list(images))]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            # FCOS's score threshold and NMS keep a data-dependent number of boxes, which
            # torch.export cannot trace: fail at once, and log_model pickles the model instead.
            raise NotImplementedError(
                "DetectionModel's box selection (score threshold, NMS) is data-dependent"
            )
        rows = []
        for found in self.detect(images):
            table = torch.cat(
                [found["boxes"], found["scores"][:, None], found["labels"][:, None].float()], 1
            )[: self.detections]
            padding = table.new_zeros(self.detections - len(table), 6)
            padding[:, 5] = NO_LABEL
            rows.append(torch.cat([table, padding]))
        return torch.stack(rows)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The pyramid the head sees (the detector's transform, then its backbone)."""
        batch, _ = self.detector.transform(list(images))
        return self.detector.backbone(batch.tensors)

    def losses(self, images: torch.Tensor, targets: list[Target]) -> dict[str, torch.Tensor]:
        """FCOS's training losses (train mode): classification, box regression, centerness."""
        return self.detector(list(images), shift_labels(targets))


def shift_labels(targets: list[Target]) -> list[Target]:
    """Targets with labels 1..K as the detector's outputs 0..K-1."""
    return [{**target, "labels": target["labels"] - 1} for target in targets]


def run_detection_trial(cfg: DictConfig) -> dict[str, float]:
    """Train ``cfg.model`` on ``cfg.task`` (a detection task) and return scores and cost.

    Per epoch, ``train_loss``, ``val_map`` and ``val_map_50`` are logged at step = epoch
    through the current reporter (:mod:`nas_plugin.tasks.reporting`) and reported to the
    sweep's pruner; a pruned trial stops there
    and logs no model. BatchNorm statistics are re-estimated on up to
    ``train.bn_recalibration_images`` training images before each evaluation. With ``log_model``
    and a recording reporter, the trained model (:class:`DetectionModel`: raw images in, boxes,
    scores and labels out) is logged with an input example and its signature.

    Returns floats: ``val_map``, ``val_map_50``, ``val_map_75``, ``val_mar_100``,
    ``val_ap_<class>`` per class, the same for ``test_``, ``train_loss``, ``params``,
    ``flops``, ``latency_ms``, ``peak_memory_mb`` (only ``params`` when ``hardware.measure``
    is false), ``train_seconds`` and ``epochs`` (those trained).

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
        ValueError: a bad config value, named in the message.
    """
    seed, epochs, runtime = start_trial(cfg)
    train_cfg, reporter = cfg.train, current_reporter()

    data = load_detection_data(cfg.task, float(train_cfg.get("train_fraction", 1.0)), seed)
    detector = build_model(cfg.model, data.num_classes, data.in_chans)
    mean, std = channel_stats(data)
    model = runtime.prepare(DetectionModel(detector, int(cfg.task.resolution), mean, std))

    results = model_cost(model, data.image_shape, cfg.get("hardware"))

    loop = EpochLoop(epochs)
    train_loss, _, seconds = train(model, data, train_cfg, seed, loop, runtime)
    # The last epoch's val scores again, with each class's AP (too slow to compute per epoch).
    val_scores = evaluate(
        model, data.loader(data.val, EVAL_BATCH_SIZE), data, runtime, per_class=True
    )
    test_scores = evaluate(
        model, data.loader(data.test, EVAL_BATCH_SIZE), data, runtime, per_class=True
    )
    results.update({f"val_{k}": v for k, v in val_scores.items()})
    results.update({f"test_{k}": v for k, v in test_scores.items()})
    results.update(train_loss=train_loss, train_seconds=seconds, epochs=float(loop.epochs_done))

    if cfg.get("log_model", False) and reporter.recording and not loop.pruned:
        reporter.log_image_model(model, input_example(data.val))
    return results


def input_example(dataset: DetectionDataset) -> torch.Tensor:
    """A few raw images of ``dataset``: the batch ``log_model`` stores and infers the
    signature from."""
    count = min(INPUT_EXAMPLE_SIZE, len(dataset))
    return torch.stack([dataset[i][0] for i in range(count)])


def train(
    model: DetectionModel,
    data: DetectionData,
    train_cfg: DictConfig,
    seed: int,
    loop: EpochLoop | None = None,
    runtime: Runtime | None = None,
) -> tuple[float, dict[str, float], float]:
    """Train ``model`` in place on ``data.train`` (FCOS's summed losses, AdamW or SGD with a
    cosine schedule), scoring it on ``data.val`` after each epoch; see
    :func:`run_detection_trial`. Returns (last epoch's mean train loss, last val scores,
    seconds)."""
    epochs, batch_size = int(train_cfg.epochs), int(train_cfg.batch_size)
    loop = EpochLoop(epochs) if loop is None else loop
    runtime = Runtime.from_config(train_cfg) if runtime is None else runtime
    model = runtime.prepare(model)
    detector = runtime.compiled(model.detector)
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
        for images, targets in loader:
            images = runtime.to_device(images)
            targets = [{k: runtime.to_device(v) for k, v in t.items()} for t in targets]
            with runtime.autocast():
                loss = sum(detector(list(images), shift_labels(targets)).values())
            optimizer_step(loss, optimizer, scaler, scheduler)
            total_loss += loss.detach().float() * len(images)
            seen += len(images)
        train_loss = total_loss.item() / seen
        check_finite_loss(train_loss, epoch, train_cfg)
        recalibrate_batchnorm(PyramidFeatures(model), recalibration, runtime=runtime)
        scores = evaluate(model, val_batches, data, runtime=runtime)
        metrics = {
            "train_loss": train_loss,
            "val_map": scores["map"],
            "val_map_50": scores["map_50"],
        }
        reporter.log_metrics(metrics, step=epoch)
        loop.report(metrics)
    runtime.synchronize()
    return train_loss, scores, time.perf_counter() - start


def recalibration_loader(data: DetectionData, images: int, seed: int) -> DataLoader | None:
    """See :meth:`~nas_plugin.tasks.dense_data.DenseSplits.recalibration_loader`."""
    return data.recalibration_loader(images, seed, EVAL_BATCH_SIZE)


@torch.no_grad()
def evaluate(
    model: DetectionModel,
    batches: Iterable[tuple[torch.Tensor, list[Target]]],
    data: DetectionData,
    runtime: Runtime | None = None,
    *,
    per_class: bool = False,
) -> dict[str, float]:
    """``map``, ``map_50``, ``map_75``, ``mar_100`` (and with ``per_class``, ``ap_<class>``) of
    ``model`` in eval mode on ``batches`` of (images, targets)."""
    runtime = runtime or Runtime(model_device(model))
    model.eval()
    predictions: list[Target] = []
    truths: list[Target] = []
    for images, targets in batches:
        with runtime.autocast():
            found = model.detect(runtime.to_device(images))
        predictions += scorable(found)
        truths += targets
    return detection_scores(predictions, truths, data.class_names if per_class else None)


def scorable(found: list[Target]) -> list[Target]:
    """Detections ({boxes, scores, labels} per image) as float32 / integer CPU tensors, what
    torchmetrics scores (autocast may have made them bf16 or fp16, on an accelerator)."""
    return [
        {
            "boxes": f["boxes"].float().cpu(),
            "scores": f["scores"].float().cpu(),
            "labels": f["labels"].cpu(),
        }
        for f in found
    ]


def detection_scores(
    predictions: list[Target], targets: list[Target], class_names: list[str] | None = None
) -> dict[str, float]:
    """COCO box mAP of ``predictions`` ({boxes, scores, labels} per image) against ``targets``
    ({boxes, labels}), by torchmetrics' ``MeanAveragePrecision``: ``map``, ``map_50``,
    ``map_75``, ``mar_100``, and given ``class_names`` (of labels 1..K), ``ap_<name>`` per class
    that the targets or predictions hold."""
    metric = MeanAveragePrecision(
        iou_type="bbox", class_metrics=class_names is not None, backend="pycocotools"
    )
    metric.update(predictions, targets)
    result = metric.compute()
    scores = {key: float(result[key]) for key in ("map", "map_50", "map_75", "mar_100")}
    # -1 means "no box to score" (a split without objects): report 0, not a negative mAP.
    scores = {key: max(value, 0.0) for key, value in scores.items()}
    if class_names is None:
        return scores
    per_class = result["map_per_class"].reshape(-1).tolist()
    for label, value in zip(result["classes"].reshape(-1).tolist(), per_class, strict=True):
        if 1 <= label <= len(class_names) and value >= 0:
            scores[f"ap_{metric_safe(class_names[label - 1])}"] = value
    return scores


def map_50(predictions: list[Target], targets: list[Target]) -> float:
    """COCO box mAP at IoU 0.5 alone (torchmetrics' ``MeanAveragePrecision`` with that one
    threshold: half the time of :func:`detection_scores`, for scores taken every step)."""
    metric = MeanAveragePrecision(iou_type="bbox", iou_thresholds=[0.5], backend="pycocotools")
    metric.update(predictions, targets)
    return max(float(metric.compute()["map_50"]), 0.0)


def channel_stats(data: DetectionData) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of (a fixed-seed sample of) the training images."""
    return data.channel_stats(EVAL_BATCH_SIZE)
