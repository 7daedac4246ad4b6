"""EfficientNet compound scaling (Tan & Le, 2019): one base network scaled in depth, width and
resolution together.

From coefficients ``alpha, beta, gamma`` and the compound coefficient ``phi``::

    depth multiplier = base_depth * alpha ** phi     (block repeats per stage, rounded up)
    width multiplier = base_width * beta ** phi      (channels, rounded to multiples of 8)
    resolution       = round(base_resolution * gamma ** phi)

The network is timm's EfficientNet generator (``timm.models.efficientnet._gen_efficientnet``,
the arch_def of ``efficientnet_b0``, random weights) at those multipliers. Resolution belongs to
the data, not the model: the network resizes its input (bilinear) to ``resolution`` first, which
is what feeding it images of that size does, so a trial of the ordinary vision task trains the
scaled network at the scaled resolution and its FLOPs and latency are measured there. The
defaults (width 0.25, depth 0.5, 16 px) scale B0 down so a trial trains on digits in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.efficientnet import _gen_efficientnet  # private: pinned by tests/test_compound.py
from torch import nn

VARIANTS = ("efficientnet_b0",)


def multipliers(model_cfg: Mapping[str, Any]) -> tuple[float, float, int]:
    """``(depth multiplier, width multiplier, resolution)`` of a ``model`` config."""
    compound = model_cfg.get("compound") or {}
    alpha, beta, gamma = (_number(compound, k, minimum=1.0) for k in ("alpha", "beta", "gamma"))
    phi = _number(compound, "phi", minimum=0.0)
    depth = _number(model_cfg, "base_depth", minimum=0.0, inclusive=False) * alpha**phi
    width = _number(model_cfg, "base_width", minimum=0.0, inclusive=False) * beta**phi
    resolution = round(_number(model_cfg, "base_resolution", minimum=1.0) * gamma**phi)
    return depth, width, resolution


class ResizedInput(nn.Module):
    """Runs ``net`` on the input resized to ``resolution`` x ``resolution``."""

    def __init__(self, net: nn.Module, resolution: int) -> None:
        super().__init__()
        self.net = net
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", align_corners=False)
        return self.net(x)


def build_compound(model_cfg: Mapping[str, Any], num_classes: int, in_chans: int) -> nn.Module:
    """The base scaled by ``model.compound`` (see ``conf/model/compound.yaml``)."""
    variant = model_cfg.get("base", "efficientnet_b0")
    if variant not in VARIANTS:
        raise ValueError(
            f"model.base = {variant!r} is not allowed: expected one of {', '.join(VARIANTS)}"
        )
    depth, width, resolution = multipliers(model_cfg)
    net = _gen_efficientnet(
        variant,
        channel_multiplier=width,
        depth_multiplier=depth,
        pretrained=False,
        num_classes=num_classes,
        in_chans=in_chans,
    )
    return ResizedInput(net, resolution)


def _number(cfg: Mapping[str, Any], key: str, minimum: float, inclusive: bool = True) -> float:
    value = cfg.get(key)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (not inclusive and value == minimum):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        where = f"model.compound.{key}" if key in ("alpha", "beta", "gamma", "phi") else key
        where = where if where.startswith("model.") else f"model.{key}"
        raise ValueError(f"{where} = {value!r} is not allowed: expected a number {bound}")
    return float(value)
