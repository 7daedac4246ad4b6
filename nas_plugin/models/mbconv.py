"""MnasNet / FBNet / ProxylessNAS-style networks of mobile inverted-bottleneck stages.

A network is a stem conv, a sequence of **stages**, a 1x1 head conv and a linear classifier.
Each stage is described by timm's block notation, ``<type>_r<depth>_k<kernel>_s<stride>
_e<expansion>_c<channels>[_se<ratio>]``:

- ``ir``: inverted residual (MBConv): 1x1 expand by ``e``, ``k``x``k`` depthwise, 1x1 project;
- ``ds``: depthwise-separable conv (an MBConv without the expansion), used when expansion is 1;
- ``r``: how many times the block repeats; only the first repeat uses stride ``s``;
- ``c``: output channels, already scaled by ``width_mult`` and rounded to a multiple of 8;
- ``se0.25``: a squeeze-and-excitation module with a 0.25 reduction ratio.

For example ``ir_r2_k5_s2_e6_c24_se0.25`` is two MBConv6 blocks with 5x5 depthwise kernels and
squeeze-excitation, the first one halving the resolution, producing 24 channels.
The strings are decoded and built by timm's EfficientNet builder.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from timm.layers import get_act_layer, make_divisible
from timm.models import _efficientnet_builder  # private: tests/test_models.py pins its behaviour
from timm.models.efficientnet import EfficientNet
from torch import nn

KERNELS = (3, 5, 7)
STRIDES = (1, 2)
ACTIVATIONS = ("relu", "relu6", "silu", "hard_swish", "gelu")
SE_RATIO = 0.25
MIN_CHANNELS = 8
CHANNEL_DIVISOR = 8


def round_width(channels: int, width_mult: float) -> int:
    """Scale ``channels`` by ``width_mult`` and round to a multiple of 8, as timm does."""
    return int(make_divisible(channels * width_mult, CHANNEL_DIVISOR))


def stage_block_string(stage: Mapping[str, Any], width_mult: float, name: str = "?") -> str:
    """Return the timm block string of one stage, e.g. ``ir_r2_k5_s2_e6_c24_se0.25``.

    ``name`` is the stage's key in ``model.stages`` and is only used in error messages.
    """
    if not isinstance(stage, Mapping):
        raise ValueError(
            f"model.stages.{name} = {stage!r} is not allowed: expected a mapping with "
            "kernel, expansion, depth, channels, se and stride"
        )
    kernel = _choice(stage, "kernel", KERNELS, name)
    stride = _choice(stage, "stride", STRIDES, name)
    depth = _int_at_least(stage, "depth", 1, name)
    channels = _int_at_least(stage, "channels", MIN_CHANNELS, name)
    expansion = _expansion(stage, name)
    se = _field(stage, "se", name, default=False)
    if not isinstance(se, bool):
        raise ValueError(f"model.stages.{name}.se = {se!r} is not allowed: expected true or false")

    out_chs = round_width(channels, width_mult)
    if expansion == 1:
        block = f"ds_r{depth}_k{kernel}_s{stride}_c{out_chs}"
    else:
        block = f"ir_r{depth}_k{kernel}_s{stride}_e{_number(expansion)}_c{out_chs}"
    return f"{block}_se{SE_RATIO}" if se else block


def arch_def(model_cfg: Mapping[str, Any]) -> list[list[str]]:
    """Return timm's ``arch_def``: one list of block strings per stage, in config order."""
    stages = model_cfg.get("stages")
    if not isinstance(stages, Mapping) or not stages:
        raise ValueError(
            f"model.stages = {stages!r} is not allowed: expected a non-empty mapping of "
            "stage name -> {kernel, expansion, depth, channels, se, stride}"
        )
    width_mult = _width_mult(model_cfg)
    return [[stage_block_string(stage, width_mult, str(name))] for name, stage in stages.items()]


def build_mbconv(model_cfg: Mapping[str, Any], num_classes: int, in_chans: int) -> nn.Module:
    """Build the network described by ``model_cfg`` (see ``conf/model/mbconv.yaml``)."""
    width_mult = _width_mult(model_cfg)
    activation = model_cfg.get("activation", "relu")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"model.activation = {activation!r} is not allowed: expected one of "
            f"{', '.join(ACTIVATIONS)}"
        )
    stem_channels = _int_at_least(model_cfg, "stem_channels", MIN_CHANNELS, None)
    head_channels = _int_at_least(model_cfg, "head_channels", MIN_CHANNELS, None)
    dropout = float(model_cfg.get("dropout", 0.0))
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.dropout = {dropout} is not allowed: expected 0 <= dropout < 1")

    block_args = _efficientnet_builder.decode_arch_def(arch_def(model_cfg))
    return EfficientNet(
        block_args=block_args,
        num_classes=num_classes,
        in_chans=in_chans,
        stem_size=round_width(stem_channels, width_mult),
        num_features=head_channels,
        act_layer=get_act_layer(activation),
        drop_rate=dropout,
        # Channels in the block strings are already scaled and rounded: don't scale them again.
        round_chs_fn=partial(round_width, width_mult=1.0),
    )


def _field(cfg: Mapping[str, Any], field: str, stage: str | None, default: Any = None) -> Any:
    if field not in cfg and default is None:
        raise ValueError(f"{_key(field, stage)} is missing")
    return cfg.get(field, default)


def _key(field: str, stage: str | None) -> str:
    return f"model.stages.{stage}.{field}" if stage is not None else f"model.{field}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(cfg: Mapping[str, Any], field: str, allowed: tuple[int, ...], stage: str) -> int:
    value = _field(cfg, field, stage)
    if not _is_int(value) or value not in allowed:
        raise ValueError(
            f"{_key(field, stage)} = {value!r} is not allowed: expected one of "
            f"{', '.join(map(str, allowed))}"
        )
    return value


def _int_at_least(cfg: Mapping[str, Any], field: str, low: int, stage: str | None) -> int:
    value = _field(cfg, field, stage)
    if not _is_int(value) or value < low:
        raise ValueError(
            f"{_key(field, stage)} = {value!r} is not allowed: expected an integer >= {low}"
        )
    return value


def _expansion(stage: Mapping[str, Any], name: str) -> float:
    value = _field(stage, "expansion", name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        raise ValueError(
            f"model.stages.{name}.expansion = {value!r} is not allowed: expected a number >= 1 "
            "(1 gives a depthwise-separable block)"
        )
    return float(value)


def _width_mult(model_cfg: Mapping[str, Any]) -> float:
    value = model_cfg.get("width_mult", 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"model.width_mult = {value!r} is not allowed: expected a number > 0")
    return float(value)


def _number(value: float) -> str:
    """Format 6.0 as ``6`` and 2.5 as ``2.5``, the way timm's own block strings are written."""
    return str(int(value)) if float(value).is_integer() else str(value)
