"""Model builders: mbconv block strings and timm's (private) EfficientNet builder, timm families."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from timm.models._efficientnet_blocks import (
    DepthwiseSeparableConv,
    InvertedResidual,
    SqueezeExcite,
)
from torch import nn

from nas_plugin.models import build_model
from nas_plugin.models.mbconv import arch_def, mobilenetv3_small_config, stage_block_string

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"


def mbconv_cfg(**stage_overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "mbconv.yaml"))
    for stage, fields in stage_overrides.items():
        cfg["stages"][stage].update(fields)
    return cfg


def stage(**fields: Any) -> dict[str, Any]:
    base = {"kernel": 3, "expansion": 6, "depth": 1, "channels": 24, "se": False, "stride": 1}
    return {**base, **fields}


@pytest.mark.parametrize(
    ("fields", "width_mult", "expected"),
    [
        ({"expansion": 1, "channels": 16}, 1.0, "ds_r1_k3_s1_c16"),
        ({"expansion": 1, "channels": 16, "se": True}, 1.0, "ds_r1_k3_s1_c16_se0.25"),
        ({"kernel": 5, "depth": 2, "stride": 2, "se": True}, 1.0, "ir_r2_k5_s2_e6_c24_se0.25"),
        ({"kernel": 7, "expansion": 3, "depth": 3, "channels": 40}, 1.0, "ir_r3_k7_s1_e3_c40"),
        ({"expansion": 2.5}, 1.0, "ir_r1_k3_s1_e2.5_c24"),
        # Width scaling rounds to a multiple of 8, never below 90% of the scaled value.
        ({"channels": 64}, 0.75, "ir_r1_k3_s1_e6_c48"),
        ({"channels": 40}, 0.5, "ir_r1_k3_s1_e6_c24"),
        ({"channels": 20}, 1.0, "ir_r1_k3_s1_e6_c24"),
    ],
)
def test_stage_block_string(fields: dict[str, Any], width_mult: float, expected: str) -> None:
    assert stage_block_string(stage(**fields), width_mult) == expected


def test_arch_def_follows_the_config_stage_order() -> None:
    assert arch_def(mbconv_cfg()) == [
        ["ds_r1_k3_s1_c16"],
        ["ir_r2_k3_s2_e4_c24"],
        ["ir_r2_k5_s2_e4_c40_se0.25"],
        ["ir_r2_k3_s1_e6_c64_se0.25"],
    ]


@pytest.mark.parametrize(("in_chans", "size"), [(1, 16), (3, 32), (1, 8)])
def test_mbconv_classifies_tiny_images(in_chans: int, size: int) -> None:
    model = build_model(OmegaConf.load(CONF / "mbconv.yaml"), num_classes=10, in_chans=in_chans)
    logits = model(torch.rand(2, in_chans, size, size))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_mbconv_choices_reach_timm_blocks() -> None:
    """Depth, kernel, expansion, SE, width and activation change what timm's builder builds."""
    cfg = mbconv_cfg(
        s2={"depth": 3, "kernel": 7, "expansion": 3},
        s3={"se": False, "depth": 1},
        s4={"se": True, "expansion": 1},
    )
    cfg.update(width_mult=0.5, activation="silu")
    model = build_model(cfg, num_classes=10, in_chans=1)

    s1, s2, s3, s4 = model.blocks
    assert isinstance(s1[0], DepthwiseSeparableConv)
    assert len(s2) == 3 and all(isinstance(b, InvertedResidual) for b in s2)
    assert s2[0].conv_dw.kernel_size == (7, 7)
    assert s2[0].conv_dw.stride == (2, 2) and s2[1].conv_dw.stride == (1, 1)
    assert s2[0].conv_pw.out_channels == 3 * s2[0].conv_pw.in_channels
    assert len(s3) == 1 and isinstance(s3[0].se, nn.Identity)
    assert isinstance(s4[0], DepthwiseSeparableConv) and isinstance(s4[0].se, SqueezeExcite)
    # width 0.5: stem 16 -> 8, s2 24 -> 16 (rounded up to a multiple of 8), s4 64 -> 32
    assert model.conv_stem.out_channels == 8
    assert s2[-1].conv_pwl.out_channels == 16
    assert s4[-1].conv_pw.out_channels == 32
    assert model.conv_head.out_channels == 256
    assert isinstance(model.bn1.act, nn.SiLU)


@pytest.mark.parametrize(
    ("stage_name", "fields", "message"),
    [
        ("s2", {"kernel": 4}, "model.stages.s2.kernel = 4 is not allowed: expected one of 3, 5, 7"),
        ("s3", {"expansion": 0.5}, "model.stages.s3.expansion = 0.5 is not allowed"),
        ("s3", {"depth": 0}, "model.stages.s3.depth = 0 is not allowed: expected an integer >= 1"),
        ("s4", {"channels": 4}, "model.stages.s4.channels = 4 is not allowed"),
        ("s1", {"stride": 3}, "model.stages.s1.stride = 3 is not allowed: expected one of 1, 2"),
        ("s1", {"se": "yes"}, "model.stages.s1.se = 'yes' is not allowed"),
        ("s2", {"activation": "gelu"}, "model.stages.s2.activation = 'gelu' is not allowed"),
        ("s2", {"first_expansion": 0.5}, "model.stages.s2.first_expansion = 0.5 is not allowed"),
        ("s1", {"first_expansion": 4}, "first_expansion = 4 needs an MBConv stage"),
    ],
)
def test_invalid_stage_values_name_the_key(
    stage_name: str, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=_literal(message)):
        build_model(mbconv_cfg(**{stage_name: fields}), num_classes=10, in_chans=1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "rnn"}, "model.kind = 'rnn' is not allowed: expected one of "),
        ({"activation": "tanh"}, "model.activation = 'tanh' is not allowed"),
        ({"width_mult": 0}, "model.width_mult = 0 is not allowed"),
        ({"stages": {}}, "model.stages = {} is not allowed"),
        ({"se_style": "cbam"}, "model.se_style = 'cbam' is not allowed: expected one of"),
    ],
)
def test_invalid_model_values_name_the_key(overrides: dict[str, Any], message: str) -> None:
    cfg = {**mbconv_cfg(), **overrides}
    with pytest.raises(ValueError, match=_literal(message)):
        build_model(cfg, num_classes=10, in_chans=1)


def test_unknown_kind_lists_the_allowed_kinds() -> None:
    with pytest.raises(ValueError, match="expected one of mbconv, timm_family, timm"):
        build_model({"kind": "nope"}, num_classes=10, in_chans=1)


@pytest.mark.parametrize("family", ["resnet", "mobilenetv3", "mobilenetv2", "efficientnet"])
def test_timm_family_runs_on_one_tiny_grayscale_image(family: str) -> None:
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "timm_family.yaml"), {"family": family})
    model = build_model(cfg, num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 16, 16)).shape == (1, 10)


def test_resnet_knobs_set_depth_and_width() -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "timm_family.yaml"))
    cfg["resnet"] = {"depth": 2, "width": 16}
    model = build_model(cfg, num_classes=5, in_chans=1)
    layers = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert [len(layer) for layer in layers] == [2, 2, 2, 2]
    assert model.layer1[0].conv1.in_channels == 16  # the stem follows the width
    assert model.layer4[-1].conv2.out_channels == 128
    assert model.fc.out_features == 5


@pytest.mark.parametrize(
    ("family", "sub_cfg", "message"),
    [
        ("mobilenetv3", {"size": "small", "width": 0.6}, "'mobilenetv3_small_060', which timm"),
        ("mobilenetv2", {"width": 3}, "available are mobilenetv2_035"),
        ("efficientnet", {"variant": "b7"}, "model.efficientnet.variant = 'b7' is not allowed"),
        ("resnet", {"depth": 0, "width": 8}, "model.resnet.depth = 0 is not allowed"),
    ],
)
def test_invalid_family_sizes_are_rejected(family: str, sub_cfg: dict, message: str) -> None:
    cfg = {"kind": "timm_family", "family": family, family: sub_cfg}
    with pytest.raises(ValueError, match=_literal(message)):
        build_model(cfg, num_classes=10, in_chans=1)


def test_timm_by_name_passes_kwargs() -> None:
    cfg = OmegaConf.create({"kind": "timm", "name": "resnet10t", "kwargs": {"drop_rate": 0.25}})
    model = build_model(cfg, num_classes=3, in_chans=1).eval()
    assert model.drop_rate == 0.25
    assert model(torch.rand(1, 1, 16, 16)).shape == (1, 3)


def test_timm_by_name_rejects_unknown_names_and_reserved_kwargs() -> None:
    with pytest.raises(ValueError, match="model.name = 'resnet_nope' is not a timm model"):
        build_model({"kind": "timm", "name": "resnet_nope"}, num_classes=3, in_chans=1)
    cfg = {"kind": "timm", "name": "resnet10t", "kwargs": {"pretrained": True}}
    with pytest.raises(ValueError, match="model.kwargs may not set pretrained"):
        build_model(cfg, num_classes=3, in_chans=1)


def test_dict_and_dictconfig_build_the_same_network() -> None:
    cfg = mbconv_cfg()
    torch.manual_seed(0)
    from_dict = build_model(copy.deepcopy(cfg), num_classes=10, in_chans=1)
    torch.manual_seed(0)
    from_omegaconf = build_model(OmegaConf.create(cfg), num_classes=10, in_chans=1)
    assert str(from_dict) == str(from_omegaconf)
    expected, actual = from_dict.state_dict(), from_omegaconf.state_dict()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def _literal(text: str) -> str:
    return re.escape(text)


def _block_summary(block: nn.Module) -> tuple:
    """What makes a block: type, kernel, stride, mid and out channels, SE (reduced channels and
    gate) and activations."""
    dw = block.conv_dw
    mid = dw.out_channels
    out = block.conv_pwl.out_channels if hasattr(block, "conv_pwl") else block.conv_pw.out_channels
    se = None
    if isinstance(block.se, SqueezeExcite):
        se = (block.se.conv_reduce.out_channels, type(block.se.act1), type(block.se.gate))
    acts = tuple(type(m) for m in block.modules() if isinstance(m, nn.ReLU | nn.Hardswish))
    return type(block), dw.kernel_size, dw.stride, mid, out, se, acts


def assert_same_stem_and_blocks_as_mobilenetv3_small(ours: nn.Module) -> list[nn.Module]:
    """Compare ``ours`` with timm's mobilenetv3_small_100 and return our 11 blocks. The head
    differs (timm's 1x1 conv to 576 channels is our head conv; MobileNetV3 adds a 1024-channel
    conv after pooling); the stem and every block are the same."""
    import timm

    theirs = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=10)
    assert repr(ours.conv_stem) == repr(theirs.conv_stem) and repr(ours.bn1) == repr(theirs.bn1)
    our_blocks = [b for stage in ours.blocks for b in stage]
    their_blocks = [b for stage in list(theirs.blocks)[:-1] for b in stage]
    assert len(our_blocks) == len(their_blocks) == 11
    for index, (a, b) in enumerate(zip(our_blocks, their_blocks, strict=True)):
        assert _block_summary(a) == _block_summary(b), index
        assert repr(a) == repr(b), index
    return our_blocks


def test_mbconv_builds_mobilenetv3_small_block_for_block() -> None:
    cfg = mobilenetv3_small_config(mbconv_cfg())
    our_blocks = assert_same_stem_and_blocks_as_mobilenetv3_small(
        build_model(cfg, num_classes=10, in_chans=3)
    )
    # MobileNetV3's SE: hard-sigmoid gate, ReLU inside, reduced from the expanded channels (24
    # in, 96 expanded: 96 / 4 = 24, where EfficientNet's SE would reduce 24 / 4 = 6).
    se = our_blocks[3].se
    assert isinstance(se.gate, nn.Hardsigmoid) and isinstance(se.act1, nn.ReLU)
    assert our_blocks[3].conv_dw.out_channels == 96 and se.conv_reduce.out_channels == 24


def test_the_stock_mobilenetv3_space_contains_mobilenetv3_small() -> None:
    """Every decision of ``search_space=mobilenetv3`` set to MobileNetV3-Small's value is a
    candidate of the space, and that candidate builds timm's network block for block."""
    import random

    import yaml

    from nas_plugin.space import SearchSpace

    space_file = CONF.parent / "plugin" / "hydra" / "sweeper" / "search_space" / "mobilenetv3.yaml"
    space = SearchSpace.from_dict(yaml.safe_load(space_file.read_text())["params"])

    def stock_model(encoding: tuple, in_chans: int) -> nn.Module:
        """The candidate ``encoding`` decoded onto the space's stock base model."""
        cfg = OmegaConf.load(CONF / "mobilenetv3.yaml")
        for key, value in space.decode(encoding).items():
            OmegaConf.update(cfg, key.removeprefix("model."), value)
        return build_model(OmegaConf.to_container(cfg), num_classes=10, in_chans=in_chans)

    small = OmegaConf.create(mobilenetv3_small_config(mbconv_cfg()))
    # encode rejects a value outside the space.
    encoding = space.encode(
        {key: OmegaConf.select(small, key.removeprefix("model.")) for key in space.names}
    )
    assert_same_stem_and_blocks_as_mobilenetv3_small(stock_model(encoding, in_chans=3))

    # Other candidates of the space build and run on a small grey image too.
    rng = random.Random(0)
    for _ in range(3):
        net = stock_model(space.sample(rng), in_chans=1).eval()
        assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
