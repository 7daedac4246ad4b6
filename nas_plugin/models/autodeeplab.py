"""Auto-DeepLab-style segmentation networks (Liu et al., CVPR 2019), one per architecture.

Two levels of search, as in Auto-DeepLab:

- the cell: an NB201 cell (:class:`~nas_plugin.models.nb201.NB201Cell`, six edges, five
  operations), shared by every layer, keys ``model.cell.edge_<j>_<i>``;
- the network: a path through the trellis of resolutions 1/4, 1/8, 1/16, 1/32 of the input.
  The stem brings the image to 1/4; each of the ``model.layers`` layers then moves ``down``
  (half the resolution, twice the channels), ``same`` or ``up`` (twice the resolution, half the
  channels), keys ``model.path.layer_<k>``, and applies the cell. A move off the trellis (``up``
  at 1/4, ``down`` at 1/32) stays where it is, so every combination of moves is a valid path
  (the resolved levels are :func:`path_levels`).

The head is DeepLabv3's ASPP on the last layer (a 1x1 branch, 3x3 branches dilated by
``model.aspp.rates``, image pooling), optionally fused with the stem's 1/4 features as in
DeepLabv3+'s decoder (``model.decoder.skip``), then a 1x1 classifier. Logits are upsampled
(bilinear) to the input's size: the network maps N x C x H x W images to N x classes x H x W.
Level ``l`` has ``channels * 2**l`` channels and spatial size ``ceil(H / 2**(l + 2))``, so any
input of at least 1 x 1 pixel works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_plugin.models.checks import positive_int
from nas_plugin.models.nb201 import NB201Cell, ReLUConvBN, cell_ops
from nas_plugin.space.autodeeplab import MOVES

LEVELS = 4  # 1/4, 1/8, 1/16, 1/32
LEVEL_NAMES = ("1/4", "1/8", "1/16", "1/32")
_STEP = {"down": 1, "same": 0, "up": -1}


def path_levels(moves: Sequence[str]) -> tuple[int, ...]:
    """The trellis level (0 = 1/4 ... 3 = 1/32) after each move, starting from 1/4; a move off
    the trellis stays at its level."""
    level, levels = 0, []
    for move in moves:
        level = min(max(level + _STEP[move], 0), LEVELS - 1)
        levels.append(level)
    return tuple(levels)


class Transition(nn.Module):
    """Into the next layer's level: a stride-2 3x3 ReLU-conv-BN (down), a 1x1 ReLU-conv-BN
    then bilinear upsampling to the finer level's size (up), or nothing (same)."""

    def __init__(self, move: int, c_in: int, c_out: int) -> None:
        super().__init__()
        self.move = move
        if move > 0:
            self.conv = ReLUConvBN(c_in, c_out, 3, stride=2)
        elif move < 0:
            self.conv = ReLUConvBN(c_in, c_out, 1)
        else:
            self.conv = nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.conv(x)
        if self.move < 0:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3): 1x1, dilated 3x3s and image pooling, each
    to ``c_out`` channels, concatenated and projected by a 1x1 convolution."""

    def __init__(self, c_in: int, c_out: int, rates: Sequence[int]) -> None:
        super().__init__()

        def conv_bn_relu(kernel: int, dilation: int = 1) -> nn.Sequential:
            pad = dilation * (kernel // 2)
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel, padding=pad, dilation=dilation, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            )

        self.branches = nn.ModuleList([conv_bn_relu(1), *(conv_bn_relu(3, r) for r in rates)])
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, c_out, 1, bias=False), nn.ReLU(inplace=True)
        )
        self.project = nn.Sequential(
            nn.Conv2d(c_out * (len(self.branches) + 1), c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        return self.project(torch.cat([*(b(x) for b in self.branches), pooled], dim=1))


def make_stem(in_chans: int, channels: int) -> nn.Sequential:
    """Two stride-2 3x3 convolutions: the image to 1/4 with ``channels`` channels."""
    return nn.Sequential(
        nn.Conv2d(in_chans, channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(channels),
    )


class AutoDeepLab(nn.Module):
    """Stem to 1/4, ``len(moves)`` cells along the trellis path, ASPP, optional skip decoder,
    classifier, logits upsampled to the input size."""

    def __init__(
        self,
        ops: Sequence[str],
        moves: Sequence[str],
        num_classes: int,
        in_chans: int = 3,
        channels: int = 8,
        aspp_channels: int = 32,
        rates: Sequence[int] = (1, 2, 3),
        skip: bool = True,
    ) -> None:
        super().__init__()
        self.ops, self.moves = tuple(ops), tuple(moves)
        self.levels = path_levels(self.moves)
        self.stem = make_stem(in_chans, channels)
        self.transitions = nn.ModuleList()
        self.cells = nn.ModuleList()
        level = 0
        for next_level in self.levels:
            c_in, c_out = channels * 2**level, channels * 2**next_level
            self.transitions.append(Transition(next_level - level, c_in, c_out))
            self.cells.append(NB201Cell(self.ops, c_out))
            level = next_level
        self.last_level = level
        self.aspp = ASPP(channels * 2**level, aspp_channels, rates)
        self.skip = (
            nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
            if skip
            else None
        )
        fused = aspp_channels + (channels if skip else 0)
        self.decoder = nn.Sequential(
            nn.Conv2d(fused, aspp_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(aspp_channels),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        sizes = [level_size(height, width, level) for level in range(LEVELS)]
        stem = self.stem(images)
        x = stem
        for transition, cell, level in zip(self.transitions, self.cells, self.levels, strict=True):
            x = cell(transition(x, sizes[level]))
        x = self.aspp(x)
        if self.last_level > 0:
            x = F.interpolate(x, size=sizes[0], mode="bilinear", align_corners=False)
        if self.skip is not None:
            # DeepLabv3+'s decoder: fuse the stem's 1/4 features, which saw finer detail.
            x = torch.cat([x, self.skip(stem)], dim=1)
        logits = self.classifier(self.decoder(x))
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)


def level_size(height: int, width: int, level: int) -> tuple[int, int]:
    """The spatial size of trellis level ``level`` (0 = 1/4) for an input of this size."""
    # What two stride-2 convolutions (padding 1) and then ``level`` more give: ceil(x / 2**k).
    factor = 2 ** (level + 2)
    return (-(-height // factor), -(-width // factor))


def path_moves(model_cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``model.layers`` moves of ``model.path`` (``layer_1`` ...); a ValueError naming a bad
    key."""
    layers = positive_int(model_cfg, "layers")
    path = model_cfg.get("path")
    if not isinstance(path, Mapping):
        raise ValueError(
            f"model.path = {path!r} is not allowed: expected a mapping layer_1..layer_{layers} "
            f"to one of {', '.join(MOVES)}"
        )
    keys = [f"layer_{k}" for k in range(1, layers + 1)]
    extra = sorted(str(k) for k in path if k not in keys)
    if extra:
        raise ValueError(
            f"model.path.{extra[0]} is not a layer of this network: model.layers = {layers} "
            f"gives the keys {', '.join(keys)}"
        )
    moves = []
    for key in keys:
        move = path.get(key)
        if move is None:
            raise ValueError(f"model.path.{key} is missing: expected one of {', '.join(MOVES)}")
        if move not in MOVES:
            raise ValueError(
                f"model.path.{key} = {move!r} is not allowed: expected one of {', '.join(MOVES)}"
            )
        moves.append(str(move))
    return tuple(moves)


def check_model_config(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The builder's arguments from ``model_cfg`` (see ``conf/model/autodeeplab.yaml``); a
    ValueError naming the first bad key."""
    aspp = model_cfg.get("aspp") or {}
    rates = aspp.get("rates")
    if (
        isinstance(rates, str | bytes)
        or not isinstance(rates, Sequence)
        or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in rates)
    ):
        raise ValueError(
            f"model.aspp.rates = {rates!r} is not allowed: expected a list of dilation rates "
            "(integers >= 1), e.g. [1, 2, 3]; [] keeps only the 1x1 and pooling branches"
        )
    skip = (model_cfg.get("decoder") or {}).get("skip", True)
    if not isinstance(skip, bool):
        raise ValueError(f"model.decoder.skip = {skip!r} is not allowed: expected true or false")
    return {
        "ops": cell_ops(model_cfg),
        "moves": path_moves(model_cfg),
        "channels": positive_int(model_cfg, "channels"),
        "aspp_channels": positive_int(aspp, "channels", "model.aspp.channels"),
        "rates": tuple(int(r) for r in rates),
        "skip": skip,
    }


def build_autodeeplab(model_cfg: Mapping[str, Any], num_classes: int, in_chans: int) -> nn.Module:
    """Build the network ``model_cfg`` describes: N x ``in_chans`` x H x W images to
    N x ``num_classes`` x H x W logits."""
    return AutoDeepLab(num_classes=num_classes, in_chans=in_chans, **check_model_config(model_cfg))


def validate_autodeeplab_space(space: Any, job_cfg: Any) -> None:
    """Raise ValueError if a candidate of ``space`` would not build (called by the sweeper
    before any trial: ``validate:`` of ``search_space=autodeeplab``): the app's model config
    must be valid, and each searched ``model.*`` value must be allowed in it, one at a time."""
    from omegaconf import OmegaConf

    base = OmegaConf.to_container(job_cfg.model, resolve=True)
    if not isinstance(base, dict):
        raise ValueError("the app's config has no 'model' mapping for search_space=autodeeplab")
    check_model_config(base)
    for param in space.params:
        if not param.name.startswith("model."):
            continue
        for value in param.values() if param.is_discrete else ():
            candidate = _with_value(base, param.name.split(".")[1:], value)
            try:
                check_model_config(candidate)
            except ValueError as err:
                raise ValueError(
                    f"the candidate {param.name}={value!r} is not valid: {err}"
                ) from err


def _with_value(base: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    import copy

    candidate = copy.deepcopy(base)
    node = candidate
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return candidate
