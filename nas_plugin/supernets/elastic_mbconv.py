"""Once-for-All elastic supernet for the ``mbconv`` search space (Cai et al., ICLR 2020).

The supernet *is* the largest network of the space, built by the same timm builder as every
trial (``nas_plugin.models.mbconv.build_mbconv``): per stage the largest kernel, the largest
expansion ratio and the largest depth. A subnet uses slices of its weights:

- **elastic kernel**: a k x k depthwise kernel is the centre of the largest one, optionally
  passed through OFA's kernel transform (a learned ``k^2 x k^2`` matrix per block and per
  kernel size, shared by all channels, starting as the identity);
- **elastic expansion**: the first ``mid`` channels of the expanded layer (``mid`` as timm
  computes it, ``make_divisible(in_chs * e)``); :meth:`ElasticMBConv.sort_channels` reorders
  them by importance (L1 norm of the projection weights) so that small subnets keep the best;
- **elastic depth**: the first ``d`` blocks of each stage.

Covered decisions of ``conf/plugin/hydra/sweeper/search_space/mbconv.yaml``: per stage
``kernel``, ``expansion`` and ``depth`` (the keys keep their names there, so an encoding of the
covered space is an encoding of the mbconv space restricted to them). Fixed by the supernet's
model config (one supernet per choice, as OFA trains one per width): ``width_mult``,
``activation``, each stage's ``channels``, ``se`` and ``stride``, the stem and head. A stage
whose config expansion is 1 is a depthwise-separable block: only its kernel is elastic.

:func:`extract_subnet` builds a standalone timm ``EfficientNet`` with ``build_mbconv`` and
copies the sliced (and transformed) weights into it: it needs nothing of this module to run,
and in eval mode it computes exactly what the supernet computes for that subnet.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import make_divisible
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from torch import nn

from nas_plugin.models.mbconv import KERNELS, build_mbconv
from nas_plugin.space import Encoding, SearchSpace

ELASTIC_FIELDS = ("kernel", "expansion", "depth")
# Keys of the mbconv search space the supernet fixes, and the model-config field each reads.
FIXED_STAGE_FIELDS = ("channels", "se", "stride")
FIXED_GLOBAL_FIELDS = ("width_mult", "activation")


class ElasticConfigError(ValueError):
    """A bad supernet config or a subnet outside the supernet: names the key and the value."""


@dataclass(frozen=True)
class StageChoices:
    """The values one stage may take; a depthwise-separable stage has one expansion and depth."""

    name: str
    kernels: tuple[int, ...]
    expansions: tuple[float, ...]
    depths: tuple[int, ...]

    @property
    def elastic_expansion(self) -> bool:
        return len(self.expansions) > 1 or self.expansions != (1.0,)


class ElasticSpace:
    """The elastic decisions of a supernet, as ``model.stages.<s>.<field>`` keys."""

    def __init__(
        self,
        model_cfg: Mapping[str, Any],
        kernels: Sequence[int] = (3, 5, 7),
        expansions: Sequence[float] = (3, 4, 6),
        depths: Sequence[int] = (1, 2, 3),
    ) -> None:
        kernels = _check_values("supernet.kernels", kernels, lambda v: v in KERNELS, KERNELS)
        expansions = _check_values(
            "supernet.expansions",
            expansions,
            lambda v: v > 1,
            "numbers > 1 (1 is a depthwise-separable block, set per stage in the model config)",
        )
        depths = _check_values("supernet.depths", depths, lambda v: int(v) == v and v >= 1, ">= 1")
        stages = model_cfg.get("stages")
        if not isinstance(stages, Mapping) or not stages:
            raise ElasticConfigError(f"model.stages = {stages!r}: expected a non-empty mapping")
        self.model_cfg = model_cfg
        self.stages: list[StageChoices] = []
        for name, stage in stages.items():
            if float(stage.get("expansion", 1)) == 1.0:
                # Depthwise-separable: no expansion layer, depth as configured.
                depth = int(stage.get("depth", 1))
                self.stages.append(StageChoices(str(name), kernels, (1.0,), (depth,)))
            else:
                self.stages.append(
                    StageChoices(
                        str(name),
                        kernels,
                        tuple(float(e) for e in expansions),
                        tuple(int(d) for d in depths),
                    )
                )

    def search_space(self) -> SearchSpace:
        """The covered part of the mbconv space, for the strategies in ``nas_plugin.strategies``."""
        spec: dict[str, Any] = {}
        for stage in self.stages:
            spec[_key(stage.name, "kernel")] = list(stage.kernels)
            if stage.elastic_expansion:
                spec[_key(stage.name, "expansion")] = [_plain(e) for e in stage.expansions]
                spec[_key(stage.name, "depth")] = list(stage.depths)
        return SearchSpace.from_dict(spec)

    def largest(self) -> dict[str, Any]:
        return self._extreme(max)

    def smallest(self) -> dict[str, Any]:
        return self._extreme(min)

    def _extreme(self, pick: Any) -> dict[str, Any]:
        arch: dict[str, Any] = {}
        for stage in self.stages:
            arch[_key(stage.name, "kernel")] = pick(stage.kernels)
            if stage.elastic_expansion:
                arch[_key(stage.name, "expansion")] = _plain(pick(stage.expansions))
                arch[_key(stage.name, "depth")] = pick(stage.depths)
        return arch

    def sample(self, rng: random.Random, elastic: Sequence[str]) -> dict[str, Any]:
        """A random subnet where only the fields in ``elastic`` vary; the rest are the largest."""
        arch = self.largest()
        for stage in self.stages:
            for field, values in zip(
                ELASTIC_FIELDS, (stage.kernels, stage.expansions, stage.depths), strict=True
            ):
                key = _key(stage.name, field)
                if field in elastic and key in arch:
                    arch[key] = _plain(rng.choice(values))
        return arch

    def resolve(self, arch: Mapping[str, Any] | Encoding) -> list[tuple[int, float, int]]:
        """``(kernel, expansion, depth)`` per stage of a subnet given as an encoding or a dict.

        Keys of the mbconv space the supernet fixes (channels, se, width_mult, activation, ...)
        may be present if they equal the supernet's value; anything else is an error.
        """
        values = dict(arch)
        self._check_fixed(values)
        known = {_key(s.name, f) for s in self.stages for f in ELASTIC_FIELDS}
        resolved = []
        for stage in self.stages:
            kernel = values.pop(_key(stage.name, "kernel"), max(stage.kernels))
            expansion = values.pop(_key(stage.name, "expansion"), max(stage.expansions))
            depth = values.pop(_key(stage.name, "depth"), max(stage.depths))
            for field, value, allowed in (
                ("kernel", kernel, stage.kernels),
                ("expansion", expansion, stage.expansions),
                ("depth", depth, stage.depths),
            ):
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or (value not in allowed)
                ):
                    raise ElasticConfigError(
                        f"{_key(stage.name, field)} = {value!r} is not in the supernet: expected "
                        f"one of {', '.join(str(_plain(a)) for a in allowed)}"
                    )
            resolved.append((int(kernel), float(expansion), int(depth)))
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            raise ElasticConfigError(
                f"subnet keys {unknown} are not decisions of the supernet; it covers "
                f"{sorted(self.search_space().names)} (and fixes {self._fixed_description()})"
            )
        return resolved

    def model_config(self, arch: Mapping[str, Any] | Encoding) -> dict[str, Any]:
        """The ``model`` config (as in ``conf/model/mbconv.yaml``) of a subnet."""
        cfg = _to_dict(self.model_cfg)
        for stage, (kernel, expansion, depth) in zip(self.stages, self.resolve(arch), strict=True):
            cfg["stages"][stage.name].update(
                kernel=kernel, expansion=_plain(expansion), depth=depth
            )
        return cfg

    def _check_fixed(self, values: dict[str, Any]) -> None:
        """Pop keys the supernet fixes, after checking they hold the supernet's value."""
        for field in FIXED_GLOBAL_FIELDS:
            key = f"model.{field}"
            if key in values:
                fixed = self.model_cfg.get(field)
                value = values.pop(key)
                if value != fixed:
                    raise ElasticConfigError(
                        f"{key} = {value!r} is not in the supernet: it is fixed to {fixed!r} "
                        "(train a supernet with that value to search it)"
                    )
        for stage in self.stages:
            stage_cfg = self.model_cfg["stages"][stage.name]
            for field in FIXED_STAGE_FIELDS:
                key = _key(stage.name, field)
                if key in values:
                    value, fixed = values.pop(key), stage_cfg.get(field)
                    if value != fixed:
                        raise ElasticConfigError(
                            f"{key} = {value!r} is not in the supernet: it is fixed to {fixed!r}"
                        )

    def _fixed_description(self) -> str:
        return ", ".join(
            [f"model.{f}" for f in FIXED_GLOBAL_FIELDS]
            + [f"model.stages.*.{f}" for f in FIXED_STAGE_FIELDS]
        )


class ElasticMBConv(nn.Module):
    """The supernet: the largest timm network plus the kernel transforms.

    Call :meth:`set_active` with a subnet, then use it as any module; ``forward`` runs the
    active subnet through sliced weights (the largest one until ``set_active`` is called).
    """

    def __init__(
        self,
        space: ElasticSpace,
        num_classes: int,
        in_chans: int,
        kernel_transform: bool = True,
    ) -> None:
        super().__init__()
        self.space = space
        self.net = build_mbconv(space.model_config(space.largest()), num_classes, in_chans)
        self.kernel_sizes = sorted(space.stages[0].kernels, reverse=True)
        # transforms["<stage>_<block>_<from>to<to>"]: k^2 x k^2, identity at the start (OFA).
        self.transforms = nn.ParameterDict()
        if kernel_transform:
            for s, stage in enumerate(self.net.blocks):
                for b in range(len(stage)):
                    for big, small in zip(self.kernel_sizes, self.kernel_sizes[1:], strict=False):
                        self.transforms[_transform_key(s, b, big, small)] = nn.Parameter(
                            torch.eye(small * small)
                        )
        self.active: list[tuple[int, float, int]] = space.resolve(space.largest())

    def set_active(self, arch: Mapping[str, Any] | Encoding) -> None:
        self.active = self.space.resolve(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.bn1(net.conv_stem(x))
        for s, (stage, (kernel, expansion, depth)) in enumerate(
            zip(net.blocks, self.active, strict=True)
        ):
            for b in range(depth):
                x = self._block(s, b, stage[b], x, kernel, expansion)
        x = net.bn2(net.conv_head(x))
        return net.forward_head(x)

    def _block(
        self, s: int, b: int, block: nn.Module, x: torch.Tensor, kernel: int, expansion: float
    ) -> torch.Tensor:
        shortcut = x
        if isinstance(block, DepthwiseSeparableConv):
            channels = block.conv_dw.in_channels
            x = self._depthwise(s, b, block.conv_dw, x, kernel, channels)
            x = block.se(_bn_act(block.bn1, x, channels))
            x = _bn_act(block.bn2, block.conv_pw(x), block.conv_pw.out_channels)
        elif isinstance(block, InvertedResidual):
            mid = mid_channels(block.conv_pw.in_channels, expansion)
            x = F.conv2d(x, block.conv_pw.weight[:mid])
            x = _bn_act(block.bn1, x, mid)
            x = self._depthwise(s, b, block.conv_dw, x, kernel, mid)
            x = _bn_act(block.bn2, x, mid)
            x = _se(block.se, x, mid)
            x = F.conv2d(x, block.conv_pwl.weight[:, :mid])
            x = _bn_act(block.bn3, x, block.conv_pwl.out_channels)
        else:  # pragma: no cover - build_mbconv only makes these two
            raise TypeError(f"unsupported block type {type(block).__name__}")
        return x + shortcut if block.has_skip else x

    def _depthwise(
        self, s: int, b: int, conv: nn.Conv2d, x: torch.Tensor, kernel: int, channels: int
    ) -> torch.Tensor:
        weight = self.kernel_weight(s, b, conv, kernel)[:channels]
        return F.conv2d(x, weight, stride=conv.stride, padding=kernel // 2, groups=channels)

    def kernel_weight(self, s: int, b: int, conv: nn.Conv2d, kernel: int) -> torch.Tensor:
        """The ``kernel`` x ``kernel`` depthwise weight of block ``b`` of stage ``s``."""
        weight = conv.weight
        size = weight.shape[-1]
        for small in self.kernel_sizes:
            if small >= size:
                continue
            if small < kernel:
                break
            weight = _centre(weight, small)
            key = _transform_key(s, b, size, small)
            if key in self.transforms:
                # OFA: the centre of the larger (transformed) kernel, times a shared matrix.
                flat = weight.reshape(weight.shape[0], small * small)
                weight = F.linear(flat, self.transforms[key]).reshape_as(weight)
            size = small
        return weight

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder every expanded layer's channels by importance, most important first.

        Importance is the L1 norm of the projection (``conv_pwl``) weights reading a channel,
        as in OFA before the elastic-expansion phase. Outputs are unchanged (a permutation).
        """
        for stage in self.net.blocks:
            for block in stage:
                if not isinstance(block, InvertedResidual):
                    continue
                order = block.conv_pwl.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
                block.conv_pw.weight.copy_(block.conv_pw.weight[order])
                block.conv_dw.weight.copy_(block.conv_dw.weight[order])
                bn = block.bn1, block.bn2
                for norm in bn:
                    for tensor in (norm.weight, norm.bias, norm.running_mean, norm.running_var):
                        tensor.copy_(tensor[order])
                if isinstance(block.se, nn.Module) and hasattr(block.se, "conv_reduce"):
                    se = block.se
                    se.conv_reduce.weight.copy_(se.conv_reduce.weight[:, order])
                    se.conv_expand.weight.copy_(se.conv_expand.weight[order])
                    se.conv_expand.bias.copy_(se.conv_expand.bias[order])
                block.conv_pwl.weight.copy_(block.conv_pwl.weight[:, order])

    @torch.no_grad()
    def extract(self, arch: Mapping[str, Any] | Encoding) -> nn.Module:
        """A standalone timm ``EfficientNet`` of the subnet with the supernet's weights."""
        cfg = self.space.model_config(arch)
        sub = build_mbconv(cfg, self.net.num_classes, self.net.conv_stem.in_channels)
        resolved = self.space.resolve(arch)
        super_state = self.net.state_dict()
        sub_state = sub.state_dict()
        kernels = {}
        for s, (kernel, _, depth) in enumerate(resolved):
            for b in range(depth):
                name = f"blocks.{s}.{b}.conv_dw.weight"
                kernels[name] = self.kernel_weight(s, b, self.net.blocks[s][b].conv_dw, kernel)
        for name, target in sub_state.items():
            source = kernels.get(name, super_state[name])
            if source.dim() == 0:
                target.copy_(source)
            else:
                target.copy_(source[tuple(slice(0, n) for n in target.shape)])
        sub.train(self.training)
        return sub


def extract_subnet(supernet: ElasticMBConv, arch: Mapping[str, Any] | Encoding) -> nn.Module:
    """``supernet.extract(arch)``: see :meth:`ElasticMBConv.extract`."""
    return supernet.extract(arch)


def mid_channels(in_chs: int, expansion: float) -> int:
    """Expanded channels of an MBConv block, exactly as timm's ``InvertedResidual`` rounds them."""
    return int(make_divisible(in_chs * expansion))


def _bn_act(norm: nn.Module, x: torch.Tensor, channels: int) -> torch.Tensor:
    """timm's ``BatchNormAct2d`` on the first ``channels`` channels (running stats sliced in
    place, so training updates the supernet's statistics)."""
    training = norm.training or norm.running_mean is None
    momentum = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            momentum = 1.0 / float(norm.num_batches_tracked)
    x = F.batch_norm(
        x,
        None if norm.running_mean is None else norm.running_mean[:channels],
        None if norm.running_var is None else norm.running_var[:channels],
        norm.weight[:channels],
        norm.bias[:channels],
        training,
        momentum,
        norm.eps,
    )
    return norm.act(norm.drop(x))


def _se(se: nn.Module, x: torch.Tensor, channels: int) -> torch.Tensor:
    if not hasattr(se, "conv_reduce"):
        return se(x)
    pooled = x.mean((2, 3), keepdim=True)
    pooled = se.act1(F.conv2d(pooled, se.conv_reduce.weight[:, :channels], se.conv_reduce.bias))
    gate = F.conv2d(pooled, se.conv_expand.weight[:channels], se.conv_expand.bias[:channels])
    return x * se.gate(gate)


def _centre(weight: torch.Tensor, size: int) -> torch.Tensor:
    start = (weight.shape[-1] - size) // 2
    return weight[..., start : start + size, start : start + size]


def _transform_key(stage: int, block: int, big: int, small: int) -> str:
    return f"s{stage}_b{block}_{big}to{small}"


def _key(stage: str, field: str) -> str:
    return f"model.stages.{stage}.{field}"


def _plain(value: float) -> int | float:
    """6.0 -> 6, so encodings read like the mbconv space's YAML values."""
    return int(value) if float(value).is_integer() else float(value)


def _check_values(key: str, values: Sequence[Any], ok: Any, allowed: Any) -> tuple:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
        raise ElasticConfigError(f"{key} = {values!r} is not allowed: expected a non-empty list")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not ok(value):
            raise ElasticConfigError(
                f"{key} contains {value!r}, which is not allowed: expected {allowed}"
            )
    return tuple(sorted(set(values)))


def _to_dict(cfg: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    return copy.deepcopy(dict(cfg))
