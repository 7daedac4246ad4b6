"""Once-for-All elastic supernet for the ``mbconv`` search space (Cai et al., ICLR 2020).

The supernet *is* the largest network of its space, built by the same timm builder as every
trial (``nas_plugin.models.mbconv.build_mbconv``): per decision the largest value. A subnet uses
the first slices of its weights, on every dimension:

- **elastic kernel**: a k x k depthwise kernel is the centre of the largest one, optionally
  passed through OFA's kernel transform (a learned ``k^2 x k^2`` matrix per block and per
  kernel size, shared by all channels, starting as the identity);
- **elastic expansion**: the first ``mid`` channels of the expanded layer (``mid`` as timm
  computes it, ``make_divisible(in_chs * e)``); :meth:`ElasticMBConv.sort_channels` reorders
  them by importance (L1 norm of the projection weights) so that small subnets keep the best;
- **elastic depth**: the first ``d`` blocks of each stage;
- **elastic width** (``channels`` per stage, ``width_mult``): the first output channels of every
  layer, as in slimmable networks / BigNAS;
- **elastic squeeze-excite** (``se``): a subnet without it skips the module;
- **elastic activation**: the same weights under another activation function.

Which decisions are elastic, and their values: :class:`ElasticSpace`. ``ElasticSpace(model_cfg,
kernels, expansions, depths)`` is OFA's setting (``pipelines/ofa.py``): kernel, expansion and
depth of every stage, the rest fixed by the model config (one supernet per choice, as OFA trains
one per width); ``ElasticSpace.from_choices(model_cfg, choices)`` makes exactly the listed keys
elastic (``estimator=supernet`` lists a sweep's search space). The keys are those of
``conf/plugin/hydra/sweeper/search_space/mbconv.yaml``, so an encoding of the covered space is an
encoding of the mbconv space restricted to them.

A subnet's network is the one ``build_mbconv`` builds from its model config; the supernet runs it
(:meth:`ElasticMBConv.forward`) with ``torch.func.functional_call`` on the sliced weights (the
gradients flow into the supernet's weights, BatchNorm statistics update the supernet's slices),
and :meth:`ElasticMBConv.extract` copies the same slices into a standalone timm
``EfficientNet``: it needs nothing of this module to run, and in eval mode it computes exactly
what the supernet computes for that subnet.
"""

from __future__ import annotations

import copy
import json
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import make_divisible
from timm.models._efficientnet_blocks import InvertedResidual
from torch import nn
from torch.func import functional_call

from nas_plugin.models.mbconv import ACTIVATIONS, KERNELS, MIN_CHANNELS, build_mbconv
from nas_plugin.space import Encoding, SearchSpace

ELASTIC_FIELDS = ("kernel", "expansion", "depth")
# Every decision a subnet is made of: per stage, then global. Stride is never elastic (it
# changes the feature map sizes); it is listed so a full candidate may carry it.
STAGE_FIELDS = ("kernel", "expansion", "depth", "channels", "se", "stride")
GLOBAL_FIELDS = ("width_mult", "activation")
SHAREABLE_STAGE_FIELDS = ("kernel", "expansion", "depth", "channels", "se")
FIXED_STAGE_FIELDS = ("channels", "se", "stride")
FIXED_GLOBAL_FIELDS = ("width_mult", "activation")
# Networks the supernet runs, one per subnet config, kept per process (only their structure is
# used: the weights come from the supernet).
SKELETON_CACHE_SIZE = 512


class ElasticConfigError(ValueError):
    """A bad supernet config or a subnet outside the supernet: names the key and the value."""


class ElasticSpace:
    """The decisions of a supernet, as ``model.width_mult``, ``model.activation`` and
    ``model.stages.<s>.<field>`` keys: the elastic ones with their values, the others fixed to
    the model config's value."""

    def __init__(
        self,
        model_cfg: Mapping[str, Any],
        kernels: Sequence[int] = (3, 5, 7),
        expansions: Sequence[float] = (3, 4, 6),
        depths: Sequence[int] = (1, 2, 3),
        choices: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        stages = model_cfg.get("stages")
        if not isinstance(stages, Mapping) or not stages:
            raise ElasticConfigError(f"model.stages = {stages!r}: expected a non-empty mapping")
        self.model_cfg = model_cfg
        self.stage_names = [str(name) for name in stages]
        if choices is None:
            choices = _ofa_choices(model_cfg, kernels, expansions, depths)
        # key -> the values the supernet is trained for (in config order of the keys).
        self.elastic: dict[str, tuple[Any, ...]] = {}
        for key in self.decisions():
            if key in choices:
                self.elastic[key] = _check_choice(key, choices[key])
        unknown = sorted(set(choices) - set(self.elastic))
        if unknown:
            raise ElasticConfigError(
                f"{unknown[0]} cannot be shared by the elastic supernet: it searches "
                f"model.width_mult, model.activation and model.stages.<stage>."
                f"{{{', '.join(SHAREABLE_STAGE_FIELDS)}}} of the stages "
                f"{', '.join(self.stage_names)}"
            )
        for name in self.stage_names:
            key = _key(name, "expansion")
            values = self.elastic.get(key, (self._configured(key),))
            if len({float(v) == 1.0 for v in values}) > 1:
                raise ElasticConfigError(
                    f"{key} = {[_plain(v) for v in values]} mixes 1 (a depthwise-separable "
                    "block) and > 1 (an MBConv block): the supernet cannot share weights "
                    "between the two; search only one kind per stage"
                )
        self.choices: dict[str, tuple[Any, ...]] = {
            key: self.elastic.get(key, (self._configured(key),)) for key in self.decisions()
        }

    @classmethod
    def from_choices(
        cls, model_cfg: Mapping[str, Any], choices: Mapping[str, Sequence[Any]]
    ) -> ElasticSpace:
        """Exactly the keys of ``choices`` elastic, with those values; the rest as configured."""
        return cls(model_cfg, choices=choices)

    def decisions(self) -> list[str]:
        keys = [f"model.{field}" for field in GLOBAL_FIELDS]
        return keys + [_key(name, field) for name in self.stage_names for field in STAGE_FIELDS]

    def _configured(self, key: str) -> Any:
        field = key.rsplit(".", 1)[1]
        if key.count(".") == 1:
            default = {"width_mult": 1.0, "activation": "relu"}[field]
            return _normal(field, self.model_cfg.get(field, default))
        stage = self.model_cfg["stages"][key.split(".")[2]]
        return _normal(field, stage.get(field, False if field == "se" else None))

    def search_space(self) -> SearchSpace:
        """The covered part of the mbconv space, for the strategies in ``nas_plugin.strategies``."""
        spec = {key: [_plain(v) for v in values] for key, values in self.elastic.items()}
        return SearchSpace.from_dict(spec)

    def largest(self) -> dict[str, Any]:
        """The largest subnet (the supernet itself): the largest value of each elastic key."""
        return {key: _plain(self._pick(key, values, max)) for key, values in self.elastic.items()}

    def smallest(self) -> dict[str, Any]:
        return {key: _plain(self._pick(key, values, min)) for key, values in self.elastic.items()}

    def _pick(self, key: str, values: tuple[Any, ...], pick: Any) -> Any:
        if key.endswith(".activation"):  # not a size: the configured one if it is elastic
            configured = self._configured(key)
            return configured if configured in values else values[0]
        return pick(values)

    def sample(self, rng: random.Random, elastic: Sequence[str]) -> dict[str, Any]:
        """A random subnet where only the fields in ``elastic`` vary; the rest are the largest."""
        arch = self.largest()
        for key, values in self.elastic.items():
            if key.rsplit(".", 1)[1] in elastic and len(values) > 1:
                arch[key] = _plain(rng.choice(values))
        return arch

    def values(self, arch: Mapping[str, Any] | Encoding) -> dict[str, Any]:
        """Every decision's value for a subnet given as an encoding or a dict (missing elastic
        keys: the largest value). Keys the supernet fixes (channels, se, width_mult, ...) may be
        present if they equal the supernet's value; anything else is an error."""
        given = dict(arch)
        largest = self.largest()
        resolved: dict[str, Any] = {}
        for key, allowed in self.choices.items():
            if key not in given:
                resolved[key] = largest.get(key, allowed[0])
                continue
            field, value = key.rsplit(".", 1)[1], given.pop(key)
            if not _allowed(field, value, allowed):
                if key in self.elastic:
                    raise ElasticConfigError(
                        f"{key} = {value!r} is not in the supernet: expected one of "
                        f"{', '.join(str(_plain(a)) for a in allowed)}"
                    )
                hint = " (train a supernet with that value to search it)"
                raise ElasticConfigError(
                    f"{key} = {value!r} is not in the supernet: it is fixed to "
                    f"{_plain(allowed[0])!r}{hint if field in GLOBAL_FIELDS else ''}"
                )
            resolved[key] = _normal(field, value)
        if given:
            raise ElasticConfigError(
                f"subnet keys {sorted(given)} are not decisions of the supernet; it covers "
                f"{sorted(self.search_space().names)} (and fixes {self._fixed_description()})"
            )
        return resolved

    def resolve(self, arch: Mapping[str, Any] | Encoding) -> list[tuple[int, float, int]]:
        """``(kernel, expansion, depth)`` per stage of a subnet (see :meth:`values`)."""
        values = self.values(arch)
        return [
            (
                int(values[_key(name, "kernel")]),
                float(values[_key(name, "expansion")]),
                int(values[_key(name, "depth")]),
            )
            for name in self.stage_names
        ]

    def model_config(self, arch: Mapping[str, Any] | Encoding) -> dict[str, Any]:
        """The ``model`` config (as in ``conf/model/mbconv.yaml``) of a subnet."""
        cfg = plain_config(self.model_cfg)
        for key, value in self.values(arch).items():
            parts = key.split(".")
            target = cfg if len(parts) == 2 else cfg["stages"][parts[2]]
            target[parts[-1]] = _plain(value)
        return cfg

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
        self.kernel_sizes = sorted(
            {int(k) for key, ks in space.choices.items() if key.endswith(".kernel") for k in ks},
            reverse=True,
        )
        # transforms["<stage>_<block>_<from>to<to>"]: k^2 x k^2, identity at the start (OFA).
        self.transforms = nn.ParameterDict()
        if kernel_transform:
            for s, stage in enumerate(self.net.blocks):
                for b in range(len(stage)):
                    size = stage[b].conv_dw.kernel_size[0]
                    for big, small in zip(self.kernel_sizes, self.kernel_sizes[1:], strict=False):
                        if big <= size:
                            self.transforms[_transform_key(s, b, big, small)] = nn.Parameter(
                                torch.eye(small * small)
                            )
        self.active: dict[str, Any] = space.values(space.largest())
        self._skeletons: OrderedDict[str, nn.Module] = OrderedDict()

    def set_active(self, arch: Mapping[str, Any] | Encoding) -> None:
        self.active = self.space.values(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skeleton = self._skeleton(self.active)
        skeleton.train(self.training)
        return functional_call(skeleton, self.sliced_state(self.active, skeleton), (x,))

    def _skeleton(self, values: Mapping[str, Any]) -> nn.Module:
        """The subnet's network, whose own weights are never used, cached."""
        cfg = self.space.model_config(values)
        key = json.dumps(cfg, sort_keys=True, default=str)
        if key in self._skeletons:
            self._skeletons.move_to_end(key)
            return self._skeletons[key]
        # Built on the CPU (timm's weight init on the meta device is slower), then emptied: its
        # weights are never read, and a cached skeleton should cost no memory.
        skeleton = build_mbconv(cfg, self.net.num_classes, self.net.conv_stem.in_channels)
        skeleton.to("meta")
        self._skeletons[key] = skeleton
        if len(self._skeletons) > SKELETON_CACHE_SIZE:
            self._skeletons.popitem(last=False)
        return skeleton

    def sliced_state(self, values: Mapping[str, Any], subnet: nn.Module) -> dict[str, torch.Tensor]:
        """``subnet``'s state dict as slices (views) of the supernet's tensors: the first
        entries along every dimension; depthwise kernels through :meth:`kernel_weight`."""
        source = self.net.state_dict(keep_vars=True)
        kernels = {}
        for s, name in enumerate(self.space.stage_names):
            kernel = int(values[_key(name, "kernel")])
            for b in range(int(values[_key(name, "depth")])):
                conv = self.net.blocks[s][b].conv_dw
                kernels[f"blocks.{s}.{b}.conv_dw.weight"] = self.kernel_weight(s, b, conv, kernel)
        state = {}
        for name, target in subnet.state_dict(keep_vars=True).items():
            tensor = kernels.get(name, source[name])
            if tensor.dim() == 0:
                state[name] = tensor
                continue
            if any(n > m for n, m in zip(target.shape, tensor.shape, strict=True)):
                raise ElasticConfigError(
                    f"{name} of the subnet has shape {tuple(target.shape)}, larger than the "
                    f"supernet's {tuple(tensor.shape)}: the supernet is not its largest network"
                )
            state[name] = tensor[tuple(slice(0, n) for n in target.shape)]
        return state

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
        values = self.space.values(arch)
        cfg = self.space.model_config(values)
        sub = build_mbconv(cfg, self.net.num_classes, self.net.conv_stem.in_channels)
        sub_state = sub.state_dict()
        for name, tensor in self.sliced_state(values, sub).items():
            sub_state[name].copy_(tensor)
        sub.train(self.training)
        return sub


def extract_subnet(supernet: ElasticMBConv, arch: Mapping[str, Any] | Encoding) -> nn.Module:
    """``supernet.extract(arch)``: see :meth:`ElasticMBConv.extract`."""
    return supernet.extract(arch)


def mid_channels(in_chs: int, expansion: float) -> int:
    """Expanded channels of an MBConv block, exactly as timm's ``InvertedResidual`` rounds them."""
    return int(make_divisible(in_chs * expansion))


def _ofa_choices(
    model_cfg: Mapping[str, Any],
    kernels: Sequence[int],
    expansions: Sequence[float],
    depths: Sequence[int],
) -> dict[str, tuple[Any, ...]]:
    """OFA's setting: kernel of every stage, expansion and depth of every MBConv stage."""
    kernels = _check_values("supernet.kernels", kernels, lambda v: v in KERNELS, KERNELS)
    expansions = _check_values(
        "supernet.expansions",
        expansions,
        lambda v: v > 1,
        "numbers > 1 (1 is a depthwise-separable block, set per stage in the model config)",
    )
    depths = _check_values("supernet.depths", depths, lambda v: int(v) == v and v >= 1, ">= 1")
    choices: dict[str, tuple[Any, ...]] = {}
    for name, stage in model_cfg["stages"].items():
        choices[_key(str(name), "kernel")] = kernels
        if float(stage.get("expansion", 1)) != 1.0:  # depthwise-separable: depth as configured
            choices[_key(str(name), "expansion")] = tuple(float(e) for e in expansions)
            choices[_key(str(name), "depth")] = tuple(int(d) for d in depths)
    return choices


def _check_choice(key: str, values: Any) -> tuple[Any, ...]:
    """The values one elastic key may take, checked and normalised (sorted, no repeats)."""
    field = key.rsplit(".", 1)[1]
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
        raise ElasticConfigError(
            f"{key} = {values!r} cannot be shared by the elastic supernet: expected a "
            "non-empty list of values"
        )
    checks: dict[str, tuple[Any, str]] = {
        "kernel": (lambda v: _is_number(v) and v in KERNELS, f"one of {KERNELS}"),
        "expansion": (lambda v: _is_number(v) and v >= 1, "numbers >= 1"),
        "depth": (lambda v: _is_int(v) and v >= 1, "integers >= 1"),
        "channels": (lambda v: _is_int(v) and v >= MIN_CHANNELS, f"integers >= {MIN_CHANNELS}"),
        "se": (lambda v: isinstance(v, bool), "true or false"),
        "width_mult": (lambda v: _is_number(v) and v > 0, "numbers > 0"),
        "activation": (lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
    }
    if field not in checks:
        raise ElasticConfigError(
            f"{key} cannot be shared by the elastic supernet: it changes the feature map sizes; "
            "fix it (one value) or use another estimator"
        )
    ok, allowed = checks[field]
    for value in values:
        if not ok(value):
            raise ElasticConfigError(
                f"{key} = {value!r} cannot be shared by the elastic supernet: expected {allowed}"
            )
    normal = {_normal(field, v) for v in values}
    return tuple(sorted(normal, key=lambda v: (str(type(v)), v)))


def _allowed(field: str, value: Any, allowed: tuple[Any, ...]) -> bool:
    if field in ("se", "activation"):
        return isinstance(value, bool | str) and value in allowed
    return _is_number(value) and value in allowed


def _normal(field: str, value: Any) -> Any:
    if field in ("kernel", "depth", "channels", "stride"):
        return int(value) if _is_number(value) else value
    if field in ("expansion", "width_mult"):
        return float(value) if _is_number(value) else value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _centre(weight: torch.Tensor, size: int) -> torch.Tensor:
    start = (weight.shape[-1] - size) // 2
    return weight[..., start : start + size, start : start + size]


def _transform_key(stage: int, block: int, big: int, small: int) -> str:
    return f"s{stage}_b{block}_{big}to{small}"


def _key(stage: str, field: str) -> str:
    return f"model.stages.{stage}.{field}"


def _plain(value: Any) -> Any:
    """6.0 -> 6, so encodings read like the mbconv space's YAML values (others unchanged)."""
    if not _is_number(value):
        return value
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


def plain_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A model config as a plain, independent dict (an OmegaConf node resolved)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return copy.deepcopy(dict(cfg))
