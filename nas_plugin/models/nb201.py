"""NAS-Bench-201 networks (Dong & Yang, ICLR 2020), so that any cell of the space can be trained.

The macro skeleton is the benchmark's::

    stem (3x3 conv, BN)
    -> N cells (C channels)  -> residual reduction -> N cells (2C) -> residual reduction
    -> N cells (4C) -> BN, ReLU -> global average pool -> linear classifier

A cell is a 4-node DAG (see :mod:`nas_plugin.space.nb201`): node 0 is the cell's input, node
``j`` is the sum over ``i < j`` of ``op_ji(node i)``, and the cell's output is node 3. Every cell
keeps its input's channels and resolution. Operations:

- ``none``: zero (the edge is dropped);
- ``skip_connect``: identity;
- ``nor_conv_1x1`` / ``nor_conv_3x3``: ReLU, convolution, BatchNorm;
- ``avg_pool_3x3``: 3x3 average pooling, stride 1 (padding not counted in the average).

The reduction block between stages is a ResNet basic block with stride 2 whose shortcut is a
2x2 average pool followed by a 1x1 convolution. The benchmark itself uses C=16, N=5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nas_plugin.space.nb201 import EDGE_KEYS, EDGES, OPS

STAGES = 3


class ReLUConvBN(nn.Sequential):
    """ReLU, a bias-free convolution and BatchNorm: NB201's ``nor_conv_*`` operations."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),  # the input is a node other edges still read
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


def make_op(op: str, channels: int) -> nn.Module | None:
    """The module of one edge; ``None`` for ``none`` (the edge contributes nothing)."""
    if op == "none":
        return None
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"NB201 operation {op!r} is unknown: expected one of {', '.join(OPS)}")


class NB201Cell(nn.Module):
    """One cell: six edges (``EDGES`` order), node ``j`` = sum of its incoming edges."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        if len(ops) != len(EDGES):
            raise ValueError(f"an NB201 cell has {len(EDGES)} edges, got {len(ops)} operations")
        self.ops = tuple(ops)
        # Keyed like the config (edge_1_0 ...); `none` edges get no module at all.
        self.edges = nn.ModuleDict()
        for key, op in zip(EDGE_KEYS, self.ops, strict=True):
            module = make_op(op, channels)
            if module is not None:
                self.edges[key] = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            inputs = [
                self.edges[key](nodes[i])
                for key, (j, i) in zip(EDGE_KEYS, EDGES, strict=True)
                if j == node and key in self.edges
            ]
            # A node whose edges are all `none` is zero (same shape as the cell's input).
            nodes.append(sum(inputs[1:], inputs[0]) if inputs else torch.zeros_like(x))
        return nodes[3]


class ResidualReduction(nn.Module):
    """NB201's reduction block: a stride-2 ResNet basic block that changes the channel count."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


def build_skeleton(
    net: nn.Module,
    channels: int,
    cells_per_stage: int,
    num_classes: int,
    in_chans: int,
    make_cell: Callable[[int], nn.Module],
) -> None:
    """Give ``net`` the NB201 skeleton (``stem``, ``cells``, ``head``, ``classifier``) with
    ``make_cell(width)`` as every cell: the stand-alone network and the supernet share it, so
    their weights have the same names."""
    net.stem = nn.Sequential(
        nn.Conv2d(in_chans, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
    )
    layers: list[nn.Module] = []
    width = channels
    for stage in range(STAGES):
        if stage > 0:
            layers.append(ResidualReduction(width, width * 2))
            width *= 2
        layers.extend(make_cell(width) for _ in range(cells_per_stage))
    net.cells = nn.Sequential(*layers)
    net.head = nn.Sequential(
        nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    net.classifier = nn.Linear(width, num_classes)


class NB201Network(nn.Module):
    """The NB201 skeleton around one cell, repeated ``cells_per_stage`` times per stage."""

    def __init__(
        self,
        ops: Sequence[str],
        channels: int = 16,
        cells_per_stage: int = 5,
        num_classes: int = 10,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.ops = tuple(ops)
        build_skeleton(
            self, channels, cells_per_stage, num_classes, in_chans, lambda c: NB201Cell(self.ops, c)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.cells(self.stem(x))))


def cell_ops(model_cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The six operations (edge order) of ``model.cell``; a ValueError naming a bad key."""
    cell = model_cfg.get("cell")
    if not isinstance(cell, Mapping):
        raise ValueError(
            f"model.cell = {cell!r} is not allowed: expected a mapping of the six edges "
            f"{', '.join(EDGE_KEYS)} to operations"
        )
    unknown = sorted(str(k) for k in cell if k not in EDGE_KEYS)
    if unknown:
        raise ValueError(
            f"model.cell.{unknown[0]} is not an NB201 edge: expected the keys "
            f"{', '.join(EDGE_KEYS)}"
        )
    ops = []
    for key in EDGE_KEYS:
        if key not in cell:
            raise ValueError(f"model.cell.{key} is missing: expected one of {', '.join(OPS)}")
        op = cell[key]
        if op not in OPS:
            raise ValueError(
                f"model.cell.{key} = {op!r} is not allowed: expected one of {', '.join(OPS)}"
            )
        ops.append(str(op))
    return tuple(ops)


def build_nb201(model_cfg: Mapping[str, Any], num_classes: int, in_chans: int) -> nn.Module:
    """Build the network ``model_cfg`` describes (see ``conf/model/nb201.yaml``)."""
    channels = _positive_int(model_cfg, "channels")
    cells_per_stage = _positive_int(model_cfg, "cells_per_stage")
    return NB201Network(cell_ops(model_cfg), channels, cells_per_stage, num_classes, in_chans)


def _positive_int(model_cfg: Mapping[str, Any], field: str) -> int:
    value = model_cfg.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model.{field} = {value!r} is not allowed: expected an integer >= 1")
    return value
