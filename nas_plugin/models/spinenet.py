"""SpineNet-style scale-permuted detectors (Du et al., CVPR 2020), one per architecture, on
torchvision's FCOS (Tian et al., 2019).

The backbone: a stem to 1/4 of the input (block 0), then ``model.num_blocks`` blocks, each with
its own level (2..5: 1/4 .. 1/32 of the input, ``channels * 2**(level - 2)`` channels) and type
(``residual``: torchvision's ResNet ``BasicBlock``; ``bottleneck``: its ``Bottleneck``), fed by
two earlier blocks (cross-scale connections): ``model.blocks.block_<k>.input_1`` / ``input_2``
= how many blocks back (1 = the previous one). Each input is resampled to the block's level
and channels (a 1x1 or stride-2 3x3 convolution, then max pooling down or nearest upsampling
up), the two are summed, and the block runs on the sum. An offset reaching before block 0 is
block 0, and two equal inputs feed once, so every combination builds. A block that feeds
neither the pyramid nor a block that does is not built (:func:`computing_blocks`).

The feature pyramid: P2, P3, P4 (strides 4, 8, 16; the images are small) with
``model.pyramid.channels`` channels, each from the last block at its level (or, if there is
none, the last block), resampled; then ``model.pyramid.fusion``: ``none``, ``top_down``
(FPN: each level adds its coarser neighbour, upsampled) or ``bidirectional`` (then PANet's
bottom-up pass, each level adding its finer neighbour, max-pooled), and a 3x3 convolution per
level. FCOS's head (``model.head.convs`` GroupNorm convolutions per tower) runs on the pyramid;
its anchor sizes (which decide which level learns which object sizes) are
``model.head.anchor_size * 2**(level - 2)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.resnet import BasicBlock, Bottleneck

from nas_plugin.models.checks import positive_int

LEVELS = (2, 3, 4, 5)  # a block's level: its features are 1 / 2**level of the input
OUTPUT_LEVELS = (2, 3, 4)
BLOCK_TYPES = ("residual", "bottleneck")
FUSIONS = ("none", "top_down", "bidirectional")
MAX_INPUT_OFFSET = 3  # input_1/input_2: 1 (the previous block) .. 3 blocks back


def conv_bn(c_in: int, c_out: int, kernel: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class Resample(nn.Module):
    """From (level, channels) to (level, channels), SpineNet's cross-scale connection: down, a
    stride-2 3x3 conv-BN then max pooling for the remaining steps; up, a 1x1 conv-BN then
    nearest upsampling to the target size; same level, a 1x1 conv-BN (nothing if the channels
    match too)."""

    def __init__(self, level_in: int, c_in: int, level_out: int, c_out: int) -> None:
        super().__init__()
        self.steps = level_out - level_in
        if self.steps > 0:
            pools = [nn.MaxPool2d(3, stride=2, padding=1) for _ in range(self.steps - 1)]
            self.op: nn.Module = nn.Sequential(conv_bn(c_in, c_out, 3, stride=2), *pools)
        elif self.steps < 0 or c_in != c_out:
            self.op = conv_bn(c_in, c_out)
        else:
            self.op = nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.op(x)
        return F.interpolate(x, size=size, mode="nearest") if self.steps < 0 else x


def make_block(kind: str, channels: int) -> nn.Module:
    """torchvision's ResNet blocks at ``channels`` in and out (a bottleneck's middle is a
    quarter of it)."""
    if kind == "residual":
        return BasicBlock(channels, channels)
    return Bottleneck(channels, channels // Bottleneck.expansion)


def make_stem(in_chans: int, channels: int) -> nn.Sequential:
    """Two stride-2 3x3 conv-BN-ReLUs: the image to 1/4, ``channels`` wide (block 0)."""
    return nn.Sequential(
        conv_bn(in_chans, channels // 2, 3, stride=2),
        nn.ReLU(inplace=True),
        conv_bn(channels // 2, channels, 3, stride=2),
        nn.ReLU(inplace=True),
    )


def make_smooth(pyramid_channels: int) -> nn.ModuleList:
    """A 3x3 conv-BN-ReLU per pyramid level, after the fusion."""
    return nn.ModuleList(
        nn.Sequential(conv_bn(pyramid_channels, pyramid_channels, 3), nn.ReLU(inplace=True))
        for _ in OUTPUT_LEVELS
    )


class SpineNet(nn.Module):
    """Stem, scale-permuted blocks, feature pyramid: N x C x H x W images to an OrderedDict
    ``p2``, ``p3``, ``p4`` of N x ``out_channels`` maps (what torchvision's detectors take)."""

    def __init__(
        self,
        blocks: Sequence[tuple[int, str, int, int]],
        in_chans: int = 3,
        channels: int = 16,
        pyramid_channels: int = 32,
        fusion: str = "top_down",
    ) -> None:
        super().__init__()
        self.blocks_spec = tuple(blocks)
        self.fusion = fusion
        self.in_chans, self.out_channels = in_chans, pyramid_channels
        self.stem = make_stem(in_chans, channels)
        self.levels = [LEVELS[0]] + [level for level, *_ in blocks]
        width = [channels * 2 ** (level - LEVELS[0]) for level in self.levels]
        self.inputs: list[tuple[int, ...]] = []
        self.resamples = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for k, (_, _, first, second) in enumerate(blocks, start=1):
            self.inputs.append(
                tuple(dict.fromkeys((resolve_input(k, first), resolve_input(k, second))))
            )
        self.outputs = output_blocks(self.levels)
        # A block that feeds neither the pyramid nor a block that does is not built: it would
        # compute nothing, yet count in the parameters and the measured latency.
        self.computing = computing_blocks(self.inputs, self.outputs)
        for k, (level, kind, _, _) in enumerate(blocks, start=1):
            if k not in self.computing:
                self.resamples.append(nn.ModuleList())
                self.blocks.append(nn.Identity())
                continue
            self.resamples.append(
                nn.ModuleList(
                    Resample(self.levels[j], width[j], level, width[k]) for j in self.inputs[k - 1]
                )
            )
            self.blocks.append(make_block(kind, width[k]))
        self.laterals = nn.ModuleList(
            Resample(self.levels[j], width[j], level, pyramid_channels)
            for j, level in zip(self.outputs, OUTPUT_LEVELS, strict=True)
        )
        self.smooth = make_smooth(pyramid_channels)

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.stem(images)
        sizes = level_sizes(x)
        features = [x]
        for k, sources in enumerate(self.inputs, start=1):
            if k not in self.computing:
                features.append(x[:0])  # never read: nothing computing depends on it
                continue
            size = sizes[self.levels[k]]
            merged = sum(
                self.gate_input(k, i, self.input_resample(k, i)(features[j], size))
                for i, j in enumerate(sources)
            )
            features.append(self.gate_block(k, self.block(k)(F.relu(merged))))
        pyramid = [
            self.lateral(o)(features[j], sizes[level])
            for o, (j, level) in enumerate(zip(self.outputs, OUTPUT_LEVELS, strict=True))
        ]
        pyramid = [self.gate_pyramid(p) for p in fuse(pyramid, self.fusion)]
        return smoothed(self.smooth, pyramid)

    # Where a gradient search scales a path by its gate (the supernet's); identity here.
    def gate_input(self, k: int, i: int, x: torch.Tensor) -> torch.Tensor:
        return x

    def gate_block(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return x

    def gate_pyramid(self, x: torch.Tensor) -> torch.Tensor:
        return x

    # The modules of the architecture (a weight-sharing supernet picks them from its own).
    def input_resample(self, k: int, i: int) -> nn.Module:
        """Block ``k``'s (1-based) resampling of its ``i``-th input."""
        return self.resamples[k - 1][i]

    def block(self, k: int) -> nn.Module:
        return self.blocks[k - 1]

    def lateral(self, o: int) -> nn.Module:
        """The resampling of the ``o``-th pyramid level's source block."""
        return self.laterals[o]


def fuse(pyramid: Sequence[torch.Tensor], fusion: str) -> list[torch.Tensor]:
    """The pyramid's levels (finest first) after ``fusion``: ``none``; ``top_down`` (each adds
    its coarser neighbour, upsampled); ``bidirectional`` (then each adds its finer neighbour,
    max-pooled)."""
    pyramid = list(pyramid)
    if fusion in ("top_down", "bidirectional"):
        for i in range(len(pyramid) - 2, -1, -1):
            coarser = F.interpolate(pyramid[i + 1], size=pyramid[i].shape[-2:], mode="nearest")
            pyramid[i] = pyramid[i] + coarser
    if fusion == "bidirectional":
        for i in range(1, len(pyramid)):
            pyramid[i] = pyramid[i] + F.max_pool2d(pyramid[i - 1], 3, stride=2, padding=1)
    return pyramid


def smoothed(smooth: nn.ModuleList, pyramid: Sequence[torch.Tensor]) -> OrderedDict:
    """``p2``, ``p3``, ``p4``: each fused level through its 3x3 convolution."""
    levels = zip(OUTPUT_LEVELS, smooth, pyramid, strict=True)
    return OrderedDict((f"p{level}", conv(p)) for level, conv, p in levels)


def level_sizes(stem: torch.Tensor) -> dict[int, tuple[int, int]]:
    """Each level's feature size from the stem's output (level 2): what stride-2 convolutions
    (padding 1) give, ceil(x / 2) per level."""
    sizes = {LEVELS[0]: tuple(stem.shape[-2:])}
    for level in LEVELS[1:]:
        h, w = sizes[level - 1]
        sizes[level] = (-(-h // 2), -(-w // 2))
    return sizes


def resolve_input(block: int, offset: int) -> int:
    """The index of the block ``offset`` blocks before ``block`` (0, the stem, if that is
    before the first)."""
    return max(block - offset, 0)


def computing_blocks(inputs: Sequence[Sequence[int]], outputs: Sequence[int]) -> frozenset[int]:
    """The blocks (1-based) the pyramid depends on: its source blocks ``outputs`` and, through
    ``inputs`` (each block's source blocks, 0 the stem), every block they read."""
    found: set[int] = set()
    pending = [j for j in outputs if j > 0]
    while pending:
        k = pending.pop()
        if k not in found:
            found.add(k)
            pending.extend(j for j in inputs[k - 1] if j > 0)
    return frozenset(found)


def output_blocks(levels: Sequence[int]) -> tuple[int, ...]:
    """Per output level, the index of the last block at that level, or of the last block if
    none is there."""
    last = len(levels) - 1
    return tuple(
        max((k for k, level in enumerate(levels) if level == out), default=last)
        for out in OUTPUT_LEVELS
    )


def build_detector(
    backbone: SpineNet,
    num_classes: int,
    head_convs: int = 2,
    anchor_size: float = 2.0,
    detections: int = 100,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    resolution: int = 64,
) -> FCOS:
    """torchvision's FCOS on ``backbone``'s pyramid with ``num_classes`` sigmoid outputs, for
    labels 0..``num_classes - 1`` (:class:`nas_plugin.tasks.detection.DetectionModel` shifts the
    task's labels 1..K onto them); images are resized to ``resolution`` squared inside it (its
    transform, which ``DetectionModel`` replaces with the task's)."""
    sizes = tuple((anchor_size * 2 ** (level - OUTPUT_LEVELS[0]),) for level in OUTPUT_LEVELS)
    anchors = AnchorGenerator(sizes, ((1.0,),) * len(sizes))
    head = FCOSHead(backbone.out_channels, 1, num_classes, num_convs=head_convs)
    return FCOS(
        backbone,
        num_classes,
        min_size=resolution,
        max_size=resolution,
        anchor_generator=anchors,
        head=head,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections,
    )


# ---------------------------------------------------------------------------------------------
# Config


def block_specs(model_cfg: Mapping[str, Any]) -> tuple[tuple[int, str, int, int], ...]:
    """(level, type, input_1, input_2) of each of ``model.num_blocks`` blocks; a ValueError
    naming a bad key."""
    count = positive_int(model_cfg, "num_blocks")
    blocks = model_cfg.get("blocks")
    keys = [f"block_{k}" for k in range(1, count + 1)]
    if not isinstance(blocks, Mapping):
        raise ValueError(
            f"model.blocks = {blocks!r} is not allowed: expected a mapping block_1..block_{count}"
            " to {level, type, input_1, input_2}"
        )
    extra = sorted(str(k) for k in blocks if k not in keys)
    if extra:
        raise ValueError(
            f"model.blocks.{extra[0]} is not a block of this network: model.num_blocks = {count}"
            f" gives the keys {', '.join(keys)}"
        )
    offsets = tuple(range(1, MAX_INPUT_OFFSET + 1))
    specs = []
    for key in keys:
        block = blocks.get(key)
        if not isinstance(block, Mapping):
            raise ValueError(
                f"model.blocks.{key} is missing: expected {{level, type, input_1, input_2}}"
            )
        where = f"model.blocks.{key}"
        level = _choice(block, "level", LEVELS, where)
        kind = _choice(block, "type", BLOCK_TYPES, where)
        first = _choice(block, "input_1", offsets, where)
        second = _choice(block, "input_2", offsets, where)
        specs.append((level, kind, first, second))
    return tuple(specs)


def check_model_config(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The builder's arguments from ``model_cfg`` (see ``conf/model/spinenet.yaml``); a
    ValueError naming the first bad key."""
    channels = positive_int(model_cfg, "channels")
    if channels % 4:
        raise ValueError(
            f"model.channels = {channels} is not allowed: expected a multiple of 4 (a "
            "bottleneck block's middle is a quarter of it)"
        )
    pyramid = model_cfg.get("pyramid") or {}
    pyramid_channels = positive_int(pyramid, "channels", "model.pyramid.channels")
    if pyramid_channels % 32:
        raise ValueError(
            f"model.pyramid.channels = {pyramid_channels} is not allowed: expected a multiple "
            "of 32 (FCOS's head normalises them in 32 groups)"
        )
    head = model_cfg.get("head") or {}
    anchor = head.get("anchor_size", 2.0)
    if isinstance(anchor, bool) or not isinstance(anchor, int | float) or not anchor > 0:
        raise ValueError(f"model.head.anchor_size = {anchor!r} is not allowed: expected > 0")
    thresholds = {}
    for name, default in (("score_thresh", 0.05), ("nms_thresh", 0.6)):
        value = head.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"model.head.{name} = {value!r} is not allowed: expected 0..1")
        thresholds[name] = float(value)
    return {
        "blocks": block_specs(model_cfg),
        "channels": channels,
        "pyramid_channels": pyramid_channels,
        "fusion": _choice(pyramid, "fusion", FUSIONS, "model.pyramid"),
        "head_convs": positive_int(head, "convs", "model.head.convs"),
        "anchor_size": float(anchor),
        "detections": positive_int(head, "detections", "model.head.detections"),
        **thresholds,
    }


def architecture_cell(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture keys of a model config, relative to ``model``: ``blocks.block_<k>.
    {level,type,input_1,input_2}`` of every block and ``pyramid.fusion`` (a one-shot search's
    derived cell; a ValueError naming a bad key)."""
    args = check_model_config(model_cfg)
    cell: dict[str, Any] = {}
    for k, (level, kind, first, second) in enumerate(args["blocks"], start=1):
        cell.update(
            {
                f"blocks.block_{k}.level": level,
                f"blocks.block_{k}.type": kind,
                f"blocks.block_{k}.input_1": first,
                f"blocks.block_{k}.input_2": second,
            }
        )
    cell["pyramid.fusion"] = args["fusion"]
    return cell


def build_spinenet(model_cfg: Mapping[str, Any], num_classes: int, in_chans: int) -> FCOS:
    """The FCOS detector ``model_cfg`` describes (see :func:`build_detector`): in train mode
    ``detector(images, targets)`` gives its losses, in eval mode ``detector(images)`` a list of
    {boxes, labels, scores} per image."""
    args = check_model_config(model_cfg)
    backbone = SpineNet(
        args["blocks"], in_chans, args["channels"], args["pyramid_channels"], args["fusion"]
    )
    return detector_on(backbone, num_classes, args)


def detector_on(backbone: nn.Module, num_classes: int, args: Mapping[str, Any]) -> FCOS:
    """:func:`build_detector` on ``backbone`` with the head settings of ``args``
    (:func:`check_model_config`'s)."""
    return build_detector(
        backbone,
        num_classes,
        head_convs=args["head_convs"],
        anchor_size=args["anchor_size"],
        detections=args["detections"],
        score_thresh=args["score_thresh"],
        nms_thresh=args["nms_thresh"],
    )


def validate_spinenet_space(space: Any, job_cfg: Any) -> None:
    """Raise ValueError if a candidate of ``space`` would not build (called by the sweeper
    before any trial: ``validate:`` of ``search_space=spinenet``): the app's model config must
    be valid, and each searched ``model.*`` value must be allowed in it, one at a time."""
    from omegaconf import OmegaConf

    from nas_plugin.models.autodeeplab import _with_value

    base = OmegaConf.to_container(job_cfg.model, resolve=True)
    if not isinstance(base, dict):
        raise ValueError("the app's config has no 'model' mapping for search_space=spinenet")
    check_model_config(base)
    for param in space.params:
        if not param.name.startswith("model."):
            continue
        for value in param.values() if param.is_discrete else ():
            try:
                check_model_config(_with_value(base, param.name.split(".")[1:], value))
            except ValueError as err:
                raise ValueError(
                    f"the candidate {param.name}={value!r} is not valid: {err}"
                ) from err


def network_key(values: Mapping[str, Any], job_cfg: Any) -> tuple:
    """Which network the candidate ``values`` (``{key: value}`` of the search space) builds on
    the app's config (``equivalent:`` of ``search_space=spinenet``): candidates with the same key
    compute the same function with the same kind of modules, so the sweep trains one of them.

    A block that neither feeds the pyramid nor a block that does computes nothing, whatever its
    type and inputs; two inputs count in either order (their resamplings are summed); input
    offsets that reach before the first block all mean the stem. The key holds the blocks that
    compute (index, level, type, sorted sources), the pyramid's source blocks and every searched
    value outside ``model.blocks``.
    """
    from omegaconf import OmegaConf

    model = OmegaConf.to_container(job_cfg.model, resolve=True)
    model = OmegaConf.create(model)
    for key, value in values.items():
        if key.startswith("model."):
            OmegaConf.update(model, key.removeprefix("model."), value)
    blocks = block_specs(model)
    levels = [LEVELS[0]] + [level for level, *_ in blocks]
    sources = [
        tuple(sorted({resolve_input(k, first), resolve_input(k, second)}))
        for k, (_, _, first, second) in enumerate(blocks, start=1)
    ]
    outputs = output_blocks(levels)
    used = computing_blocks(sources, outputs)
    computing = tuple((k, blocks[k - 1][0], blocks[k - 1][1], sources[k - 1]) for k in sorted(used))
    rest = tuple(
        sorted((k, repr(v)) for k, v in values.items() if not k.startswith("model.blocks."))
    )
    return computing, outputs, rest


def _choice(cfg: Mapping[str, Any], field: str, allowed: Sequence[Any], where: str) -> Any:
    value = cfg.get(field)
    # bool is an int: level true must not pass as level 1.
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(
            f"{where}.{field} = {value!r} is not allowed: expected one of "
            f"{', '.join(str(a) for a in allowed)}"
        )
    return value
