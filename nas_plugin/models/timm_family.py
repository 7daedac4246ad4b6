"""Hand-designed timm architectures, each with its own size knobs, built without pretrained weights.

``kind: timm_family`` picks a family and reads only that family's sub-config:

- ``resnet: {depth, width}``: BasicBlock ResNet with ``depth`` blocks in each of its 4 stages and
  ``(w, 2w, 4w, 8w)`` channels; the stem is timm's 3-conv "deep" stem producing ``w`` channels
  (timm's plain 7x7 stem is fixed at 64 channels whatever ``stem_width`` says).
- ``mobilenetv3: {size, width}``: ``mobilenetv3_<size>_<width*100>``, e.g. small/0.75.
- ``mobilenetv2: {width}``: ``mobilenetv2_<width*100>``, e.g. 0.5.
- ``efficientnet: {variant, drop_path_rate}``: ``efficientnet_<variant>``, e.g. b0 or lite0. timm
  registers fixed width/depth multipliers per variant, so the variant is the size knob.

``kind: timm`` builds any timm model by ``name`` with extra constructor ``kwargs``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import timm
from omegaconf import DictConfig, OmegaConf
from torch import nn

# Set by the trial, never by the user: weights are never downloaded.
_RESERVED_KWARGS = ("pretrained", "num_classes", "in_chans")
_EFFICIENTNET_VARIANT = re.compile(r"efficientnet_(b[0-3]|lite[0-4]|e[sml])")


def build_timm_family(model_cfg: Mapping[str, Any], num_classes: int, in_chans: int) -> nn.Module:
    """Build the active family of ``conf/model/timm_family.yaml``."""
    family = model_cfg.get("family")
    if family not in FAMILIES:
        raise ValueError(
            f"model.family = {family!r} is not allowed: expected one of {', '.join(FAMILIES)}"
        )
    sub_cfg = model_cfg.get(family)
    if not isinstance(sub_cfg, Mapping):
        raise ValueError(f"model.{family} is missing: the '{family}' family needs its sub-config")
    name, kwargs = FAMILIES[family](sub_cfg)
    kwargs["drop_rate"] = float(model_cfg.get("drop_rate", 0.0))
    return _create(name, kwargs, num_classes, in_chans)


def build_timm(model_cfg: Mapping[str, Any], num_classes: int, in_chans: int) -> nn.Module:
    """Build ``timm.create_model(model.name, **model.kwargs)`` with random weights."""
    name = model_cfg.get("name")
    if not isinstance(name, str) or not timm.is_model(name):
        similar = timm.list_models(f"*{name}*")[:10] if isinstance(name, str) else []
        hint = f"; similar names: {', '.join(similar)}" if similar else ""
        raise ValueError(f"model.name = {name!r} is not a timm model: see timm.list_models(){hint}")
    kwargs = model_cfg.get("kwargs") or {}
    if isinstance(kwargs, DictConfig):
        kwargs = OmegaConf.to_container(kwargs, resolve=True)
    reserved = sorted(set(kwargs) & set(_RESERVED_KWARGS))
    if reserved:
        raise ValueError(
            f"model.kwargs may not set {', '.join(reserved)}: the task sets them "
            "(pretrained is always false)"
        )
    return _create(name, dict(kwargs), num_classes, in_chans)


def _create(name: str, kwargs: dict[str, Any], num_classes: int, in_chans: int) -> nn.Module:
    return timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
    )


def _resnet(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    depth = _positive_int(cfg, "resnet", "depth", 1)
    width = _positive_int(cfg, "resnet", "width", 8)
    # resnet18's registration only sets block=BasicBlock and layers; ours override the layers.
    return "resnet18", {
        "layers": [depth] * 4,
        "channels": (width, 2 * width, 4 * width, 8 * width),
        "stem_type": "deep",
        "stem_width": width // 2,  # the deep stem ends with 2 * stem_width channels
    }


def _mobilenetv3(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    size, width = cfg.get("size"), cfg.get("width")
    name = f"mobilenetv3_{size}_{_percent(width)}"
    return _registered(name, "mobilenetv3_*", "model.mobilenetv3.{size, width}"), {}


def _mobilenetv2(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    name = f"mobilenetv2_{_percent(cfg.get('width'))}"
    return _registered(name, "mobilenetv2_*", "model.mobilenetv2.width"), {}


def _efficientnet(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    variant = cfg.get("variant")
    allowed = [
        m.removeprefix("efficientnet_")
        for m in timm.list_models("efficientnet_*")
        if _EFFICIENTNET_VARIANT.fullmatch(m)
    ]
    if variant not in allowed:
        raise ValueError(
            f"model.efficientnet.variant = {variant!r} is not allowed: expected one of "
            f"{', '.join(allowed)}"
        )
    drop_path = float(cfg.get("drop_path_rate", 0.0))
    return f"efficientnet_{variant}", {"drop_path_rate": drop_path}


FAMILIES: dict[str, Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]]]] = {
    "resnet": _resnet,
    "mobilenetv3": _mobilenetv3,
    "mobilenetv2": _mobilenetv2,
    "efficientnet": _efficientnet,
}


def _registered(name: str, pattern: str, keys: str) -> str:
    available = timm.list_models(pattern)
    if name not in available:
        raise ValueError(
            f"{keys} gives timm model {name!r}, which timm does not have: available are "
            f"{', '.join(available)}"
        )
    return name


def _percent(width: Any) -> str:
    """Format a width multiplier the way timm names models: 0.75 -> ``075``."""
    if isinstance(width, bool) or not isinstance(width, int | float):
        return repr(width)
    return f"{round(width * 100):03d}"


def _positive_int(cfg: Mapping[str, Any], family: str, field: str, low: int) -> int:
    value = cfg.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f"model.{family}.{field} = {value!r} is not allowed: expected an integer >= {low}"
        )
    return value
