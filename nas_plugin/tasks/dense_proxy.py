"""The dense tasks' model factories for zero-cost proxies (``estimator=zero_cost``, the
zero-cost pre-screen): segmentation and detection.

Each builds the network its trial (:mod:`nas_plugin.tasks.segmentation`,
:mod:`nas_plugin.tasks.detection`) would train, with the same initial weights, and draws
minibatches of raw training images with their targets:

- segmentation: the :class:`~nas_plugin.tasks.segmentation.SegmentationModel` (per-pixel
  logits) and the masks, ``task.ignore_index`` pixels set to cross-entropy's own ignore value,
  so the gradient proxies' per-pixel cross-entropy skips them as training does;
- detection: :class:`DetectorProxy`, the FCOS detector seen through its head (every location's
  class logits, box regression and centerness) and, for the gradient proxies, its summed
  training losses on the images' boxes (padded to one tensor, :func:`pad_targets`).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset

from nas_plugin.models import build_model
from nas_plugin.tasks.detection import DetectionModel, shift_labels
from nas_plugin.tasks.detection import channel_stats as detection_stats
from nas_plugin.tasks.detection_data import Target, load_detection_data
from nas_plugin.tasks.segmentation import SegmentationModel
from nas_plugin.tasks.segmentation import channel_stats as segmentation_stats
from nas_plugin.tasks.segmentation_data import load_segmentation_data
from nas_plugin.tasks.training import seed_everything, set_threads
from nas_plugin.tasks.vision import Preprocess

CROSS_ENTROPY_IGNORE = -100  # F.cross_entropy's default ignore_index
PADDING_LABEL = -1.0  # a padding row of pad_targets


def segmentation_proxy_inputs(
    cfg: DictConfig, batch_size: int, batches: int, seed: int
) -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    """(model, image batches, mask batches) for the segmentation trial config ``cfg``: the
    model takes raw images in [0, 1] and returns N x classes x H x W logits, initialised from
    ``cfg.seed`` as ``run_segmentation_trial`` initialises it; the ``batches`` batches of
    ``batch_size`` images are drawn without replacement from the training split by ``seed``."""
    train_cfg = _start(cfg, batch_size, batches)
    data = load_segmentation_data(cfg.task, float(train_cfg.get("train_fraction", 1.0)), cfg.seed)
    # The trial seeds, loads its data (which draws nothing from torch's generator), then
    # builds: seeding right before building gives the trial's initial weights.
    seed_everything(int(cfg.seed))
    net = build_model(cfg.model, data.num_classes, data.in_chans)
    mean, std = segmentation_stats(data)
    model = SegmentationModel(Preprocess(int(cfg.task.resolution), mean, std), net)
    examples = _draw(data.train, batch_size * batches, seed)
    images = torch.stack([image for image, _ in examples])
    masks = torch.stack([mask for _, mask in examples])
    masks = masks.masked_fill(masks == data.ignore_index, CROSS_ENTROPY_IGNORE)
    return model, list(images.split(batch_size)), list(masks.split(batch_size))


def detection_proxy_inputs(
    cfg: DictConfig, batch_size: int, batches: int, seed: int
) -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    """(model, image batches, padded target batches) for the detection trial config ``cfg``:
    a :class:`DetectorProxy` around the detector ``run_detection_trial`` would train (same
    initial weights, same transform); targets as :func:`pad_targets`. Drawn as
    :func:`segmentation_proxy_inputs` draws."""
    train_cfg = _start(cfg, batch_size, batches)
    data = load_detection_data(cfg.task, float(train_cfg.get("train_fraction", 1.0)), cfg.seed)
    seed_everything(int(cfg.seed))
    detector = build_model(cfg.model, data.num_classes, data.in_chans)
    mean, std = detection_stats(data)
    model = DetectorProxy(DetectionModel(detector, int(cfg.task.resolution), mean, std))
    examples = _draw(data.train, batch_size * batches, seed)
    images = torch.stack([image for image, _ in examples])
    chunks = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    targets = [pad_targets([target for _, target in chunk]) for chunk in chunks]
    return model, list(images.split(batch_size)), targets


class DetectorProxy(nn.Module):
    """A :class:`~nas_plugin.tasks.detection.DetectionModel` as the proxies see it.

    ``forward(images)``: the FCOS head's outputs at every location of the pyramid, N x A x
    (classes + 4 + 1) (class logits, box regression, centerness), before box decoding and NMS,
    which have no gradient and keep a data-dependent number of boxes. ``proxy_loss(images,
    targets)``: FCOS's training losses (classification, box regression, centerness) summed,
    whatever the train/eval mode the proxies put the network in."""

    def __init__(self, model: DetectionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, _, outputs, _ = self._head(images)
        return torch.cat(
            [outputs["cls_logits"], outputs["bbox_regression"], outputs["bbox_ctrness"]], dim=2
        )

    def proxy_loss(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        detector = self.model.detector
        boxes = shift_labels(unpad_targets(targets))
        batch, features, outputs, boxes = self._head(images, boxes)
        anchors = detector.anchor_generator(batch, features)
        per_level = [f.size(2) * f.size(3) for f in features]
        losses = detector.compute_loss(boxes, outputs, anchors, per_level)
        return sum(losses.values(), torch.zeros((), device=images.device))

    def _head(self, images: torch.Tensor, targets: list[Target] | None = None) -> tuple:
        """(the transformed batch, the pyramid, the head's outputs, the targets in the
        transformed batch's pixels), as FCOS's own forward computes them."""
        detector = self.model.detector
        batch, targets = detector.transform(list(images), targets)
        features = list(detector.backbone(batch.tensors).values())
        return batch, features, detector.head(features), targets


def pad_targets(targets: list[Target]) -> torch.Tensor:
    """The images' boxes as one float tensor N x M x 5 (``x1, y1, x2, y2, label``; M the most
    boxes of an image, at least 1), rows past an image's boxes labelled ``PADDING_LABEL``."""
    most = max([1, *(len(t["labels"]) for t in targets)])
    padded = torch.zeros(len(targets), most, 5)
    padded[:, :, 4] = PADDING_LABEL
    for row, target in zip(padded, targets, strict=True):
        count = len(target["labels"])
        row[:count, :4] = target["boxes"]
        row[:count, 4] = target["labels"].float()
    return padded


def unpad_targets(padded: torch.Tensor) -> list[Target]:
    """:func:`pad_targets` undone: ``{boxes, labels}`` per image (labels 1..K)."""
    out = []
    for row in padded:
        kept = row[row[:, 4] != PADDING_LABEL]
        out.append({"boxes": kept[:, :4], "labels": kept[:, 4].round().long()})
    return out


def _start(cfg: DictConfig, batch_size: int, batches: int) -> DictConfig:
    if batch_size < 1 or batches < 1:
        raise ValueError(f"batch_size = {batch_size}, batches = {batches}: expected >= 1 each")
    train_cfg = cfg.get("train") or {}
    set_threads(train_cfg)
    return train_cfg


def _draw(dataset: Dataset, count: int, seed: int) -> list:
    """``count`` examples of ``dataset`` drawn without replacement by ``seed``."""
    if len(dataset) < count:
        raise ValueError(
            f"the training split has {len(dataset)} images, fewer than batch_size x batches "
            f"= {count}: lower them"
        )
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return [dataset[i] for i in order[:count].tolist()]
