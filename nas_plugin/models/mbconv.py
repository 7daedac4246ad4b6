"""MnasNet / FBNet / ProxylessNAS-style networks of mobile inverted-bottleneck stages.

A network is a stem conv, a sequence of **stages**, a 1x1 head conv and a linear classifier.
Each stage is described by timm's block notation, ``<type>_r<depth>_k<kernel>_s<stride>
_e<expansion>_c<channels>[_se<ratio>]``:

- ``ir``: inverted residual (MBConv): 1x1 expand by ``e``, ``k``x``k`` depthwise, 1x1 project;
- ``ds``: depthwise-separable conv (an MBConv without the expansion), used when expansion is 1;
- ``r``: how many times the block repeats; only the first repeat uses stride ``s``;
- ``c``: output channels, already scaled by ``width_mult`` and rounded to a multiple of 8;
- ``se0.25``: a squeeze-and-excitation module with a 0.25 reduction ratio;
- ``nre`` / ``nr6`` / ``nhs`` / ``nsw``: the block's activation (relu, relu6, hard_swish, silu)
  when its stage sets ``activation`` (otherwise ``model.activation``).

MobileNetV3's blocks (Howard et al., 2019) come from three options: a per-stage ``activation``
(hard-swish in the deep stages, ReLU in the early ones), ``model.se_style: mobilenetv3`` (SE
with a hard-sigmoid gate, ReLU inside, reduced from the expanded channels and rounded to a
multiple of 8, as timm's ``mobilenetv3_*`` build it; ``efficientnet``, the default: sigmoid gate,
the block's activation, reduced from the block's input), and a stage's ``first_expansion``, the
expansion of its first (strided) block when it differs from the others' (MobileNetV3-Small's
``ir_r1_k3_s2_e4.5_c24_nre, ir_r1_k3_s1_e3.67_c24_nre``): the stage is then two block strings.

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
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import round_channels
from timm.models.efficientnet import EfficientNet
from torch import nn

KERNELS = (3, 5, 7)
STRIDES = (1, 2)
ACTIVATIONS = ("relu", "relu6", "silu", "hard_swish", "gelu")
# timm's block-string code of a block's own activation (a stage's `activation`).
STAGE_ACTIVATIONS = {"relu": "nre", "relu6": "nr6", "hard_swish": "nhs", "silu": "nsw"}
SE_STYLES = ("efficientnet", "mobilenetv3")
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
    block = f"{block}_se{SE_RATIO}" if se else block
    act = _stage_activation(stage, name)
    return f"{block}_{STAGE_ACTIVATIONS[act]}" if act is not None else block


def stage_block_strings(stage: Mapping[str, Any], width_mult: float, name: str = "?") -> list[str]:
    """The stage's block strings: one, or two when its ``first_expansion`` differs from its
    ``expansion`` (the first block, with the stage's stride, then the other ``depth - 1``)."""
    single = stage_block_string(stage, width_mult, name)
    first = stage.get("first_expansion")
    if first is None:
        return [single]
    if isinstance(first, bool) or not isinstance(first, int | float) or first <= 1:
        raise ValueError(
            f"model.stages.{name}.first_expansion = {first!r} is not allowed: expected null "
            "(the stage's expansion) or a number > 1"
        )
    expansion = _expansion(stage, name)
    if float(first) == expansion:
        return [single]
    if expansion == 1:
        raise ValueError(
            f"model.stages.{name}.first_expansion = {first!r} needs an MBConv stage (expansion "
            "> 1); a depthwise-separable stage (expansion 1) has no expansion to vary"
        )
    depth = _int_at_least(stage, "depth", 1, name)
    blocks = [stage_block_string({**stage, "depth": 1, "expansion": first}, width_mult, name)]
    if depth > 1:
        rest = {**stage, "depth": depth - 1, "stride": 1}
        blocks.append(stage_block_string(rest, width_mult, name))
    return blocks


def _stage_activation(stage: Mapping[str, Any], name: str) -> str | None:
    act = stage.get("activation")
    if act is not None and act not in STAGE_ACTIVATIONS:
        raise ValueError(
            f"model.stages.{name}.activation = {act!r} is not allowed: expected null (the "
            f"model's activation) or one of {', '.join(STAGE_ACTIVATIONS)}"
        )
    return act


def arch_def(model_cfg: Mapping[str, Any]) -> list[list[str]]:
    """Return timm's ``arch_def``: one list of block strings per stage, in config order."""
    stages = model_cfg.get("stages")
    if not isinstance(stages, Mapping) or not stages:
        raise ValueError(
            f"model.stages = {stages!r} is not allowed: expected a non-empty mapping of "
            "stage name -> {kernel, expansion, depth, channels, se, stride}"
        )
    width_mult = _width_mult(model_cfg)
    return [stage_block_strings(stage, width_mult, str(name)) for name, stage in stages.items()]


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
    se_style = model_cfg.get("se_style", "efficientnet")
    if se_style not in SE_STYLES:
        raise ValueError(
            f"model.se_style = {se_style!r} is not allowed: expected one of {', '.join(SE_STYLES)}"
        )
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
        se_layer=mobilenetv3_se if se_style == "mobilenetv3" else None,
        # Channels in the block strings are already scaled and rounded: don't scale them again.
        round_chs_fn=partial(round_width, width_mult=1.0),
    )


# timm's mobilenetv3_small_100 (pretrained=False) in this notation, block for block (its head, a
# 1x1 conv to 576 channels, is our head conv; MobileNetV3 adds a 1024-channel conv after pooling).
MOBILENETV3_SMALL_STAGES: dict[str, dict[str, Any]] = {
    "s1": {"kernel": 3, "expansion": 1, "depth": 1, "channels": 16, "se": True, "stride": 2,
           "activation": "relu"},
    "s2": {"kernel": 3, "expansion": 3.67, "first_expansion": 4.5, "depth": 2, "channels": 24,
           "se": False, "stride": 2, "activation": "relu"},
    "s3": {"kernel": 5, "expansion": 6, "first_expansion": 4, "depth": 3, "channels": 40,
           "se": True, "stride": 2, "activation": "hard_swish"},
    "s4": {"kernel": 5, "expansion": 3, "depth": 2, "channels": 48, "se": True, "stride": 1,
           "activation": "hard_swish"},
    "s5": {"kernel": 5, "expansion": 6, "depth": 3, "channels": 96, "se": True, "stride": 2,
           "activation": "hard_swish"},
}  # fmt: skip


def mobilenetv3_small_config(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``model_cfg`` (an mbconv config) with MobileNetV3-Small's stem, stages and SE."""
    return {
        **dict(model_cfg),
        "activation": "hard_swish",
        "se_style": "mobilenetv3",
        "width_mult": 1.0,
        "stem_channels": 16,
        "head_channels": 576,
        "stages": {name: dict(stage) for name, stage in MOBILENETV3_SMALL_STAGES.items()},
    }


def mobilenetv3_se(in_chs: int, act_layer: Any = None, **_: Any) -> nn.Module:
    """MobileNetV3's squeeze-excite, as timm's ``mobilenetv3_*`` build it: reduced from the
    expanded channels by 0.25, rounded to a multiple of 8, ReLU, hard-sigmoid gate.

    It takes no ``rd_ratio``, so timm's builder does not divide the ratio by the expansion (what
    it does for EfficientNet's SE, reduced from the block's input)."""
    return SqueezeExcite(
        in_chs,
        rd_ratio=SE_RATIO,
        gate_layer="hard_sigmoid",
        force_act_layer=nn.ReLU,
        rd_round_fn=round_channels,
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
