"""Networks of the hierarchical space (Liu et al., 2018): a cell of motifs of primitives.

The macro skeleton (scaled down from the paper's, which stacks cells of a 200-channel level-3
motif on CIFAR-10)::

    stem (3x3 conv, BN, C channels)
    -> cell (C) -> reduction -> cell (2C) -> reduction -> ... (``cells`` cells)
    -> BN, ReLU -> global average pool -> linear classifier

A **cell** is the level-3 motif: a DAG whose edges are level-2 motifs (or ``none``); a level-2
motif is a DAG whose edges are primitives. In both, node 0 is the input, node ``j`` the sum of
its incoming edges (zero when it has none), the last node the output; everything keeps the
channels and resolution of the cell. A motif used on several edges is built once per edge: the
same structure, its own weights. The reduction between cells is the paper's 3x3 separable
convolution with stride 2 (doubling the channels). The paper merges a node's inputs by
depthwise concatenation and a 1x1 convolution; we sum them (as NB201 does), which keeps every
node at C channels. Keys: ``conf/model/hierarchical.yaml``; the space:
:mod:`nas_plugin.space.hierarchical`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nas_plugin.space.hierarchical import NONE, PRIMITIVES


class ConvBNReLU(nn.Sequential):
    """A convolution (depthwise when ``groups == channels``), BatchNorm, ReLU: Liu et al.'s convs
    are each followed by BN and ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=False),  # a node's value is read by several edges
        )


class SepConv(nn.Sequential):
    """3x3 depthwise then 1x1 pointwise convolution, BN, ReLU (a separable convolution)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=False),
        )


def make_primitive(op: str, channels: int) -> nn.Module | None:
    """The module of a level-1 primitive; ``None`` for ``none`` (no edge)."""
    if op == "identity":
        return nn.Identity()
    if op == "conv_1x1":
        return ConvBNReLU(channels, channels, 1)
    if op == "dw_conv_3x3":
        return ConvBNReLU(channels, channels, 3, groups=channels)
    if op == "sep_conv_3x3":
        return SepConv(channels, channels)
    if op == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if op == NONE:
        return None
    raise ValueError(f"hierarchical primitive {op!r} is unknown: expected one of {PRIMITIVES}")


class DAG(nn.Module):
    """Node ``j`` = sum over ``i < j`` of ``edge_ji(node i)``; the output is the last node."""

    def __init__(self, nodes: int, edge_modules: Mapping[tuple[int, int], nn.Module]) -> None:
        super().__init__()
        self.nodes = nodes
        self.inputs = {j: [i for (jj, i) in edge_modules if jj == j] for j in range(1, nodes)}
        self.edges = nn.ModuleDict({f"e_{j}_{i}": m for (j, i), m in edge_modules.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [x]
        for j in range(1, self.nodes):
            incoming = [self.edges[f"e_{j}_{i}"](values[i]) for i in self.inputs[j]]
            values.append(sum(incoming) if incoming else torch.zeros_like(x))
        return values[-1]


def _edges_of(spec: Any, where: str) -> dict[tuple[int, int], str]:
    """``{e_j_i: op}`` -> ``{(j, i): op}``, checked."""
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"{where} = {spec!r} is not allowed: expected a mapping e_<j>_<i>: op")
    out = {}
    for key, op in spec.items():
        parts = str(key).split("_")
        if len(parts) != 3 or parts[0] != "e" or not all(p.isdigit() for p in parts[1:]):
            raise ValueError(f"{where}.{key} is not an edge: expected keys e_<j>_<i> (i < j)")
        j, i = int(parts[1]), int(parts[2])
        if not i < j:
            raise ValueError(f"{where}.{key}: an edge goes from node i to a later node j (i < j)")
        out[(j, i)] = str(op)
    return out


def _nodes(edge_ops: Mapping[tuple[int, int], str]) -> int:
    return max(j for j, _ in edge_ops) + 1


def build_motif(spec: Mapping[str, Any], channels: int, where: str) -> DAG:
    """A level-2 motif (primitives on its edges)."""
    ops = _edges_of(spec, where)
    modules = {}
    for edge, op in ops.items():
        if op not in PRIMITIVES:
            raise ValueError(
                f"{where}.e_{edge[0]}_{edge[1]} = {op!r} is not allowed: expected one of "
                f"{', '.join(PRIMITIVES)}"
            )
        module = make_primitive(op, channels)
        if module is not None:
            modules[edge] = module
    return DAG(_nodes(ops), modules)


def build_cell(
    cell: Mapping[str, Any], motifs: Mapping[str, Any], channels: int, prefix: str = "model"
) -> DAG:
    """The level-3 motif: each edge a fresh instance of the level-2 motif it names."""
    ops = _edges_of(cell, f"{prefix}.cell")
    modules = {}
    for (j, i), op in ops.items():
        if op == NONE:
            continue
        if op not in motifs:
            raise ValueError(
                f"{prefix}.cell.e_{j}_{i} = {op!r} is not allowed: expected none or a motif of "
                f"{prefix}.motifs ({', '.join(map(str, motifs))})"
            )
        modules[(j, i)] = build_motif(motifs[op], channels, f"{prefix}.motifs.{op}")
    return DAG(_nodes(ops), modules)


class HierarchicalNet(nn.Module):
    def __init__(
        self,
        cell: Mapping[str, Any],
        motifs: Mapping[str, Any],
        num_classes: int,
        in_chans: int,
        channels: int,
        cells: int,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        layers: list[nn.Module] = []
        width = channels
        for index in range(cells):
            if index:
                layers.append(SepConv(width, 2 * width, stride=2))
                width *= 2
            layers.append(build_cell(cell, motifs, width))
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.cells(self.stem(x))).flatten(1))


def build_hierarchical(
    model_cfg: Mapping[str, Any], num_classes: int, in_chans: int
) -> HierarchicalNet:
    """Build the network ``model_cfg`` describes (see ``conf/model/hierarchical.yaml``)."""
    channels = _positive(model_cfg, "channels", 16)
    cells = _positive(model_cfg, "cells", 3)
    motifs = model_cfg.get("motifs")
    if not isinstance(motifs, Mapping) or not motifs:
        raise ValueError(
            f"model.motifs = {motifs!r} is not allowed: expected a mapping m<k>: {{e_<j>_<i>: op}}"
        )
    return HierarchicalNet(model_cfg.get("cell"), motifs, num_classes, in_chans, channels, cells)


def _positive(cfg: Mapping[str, Any], key: str, default: int) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model.{key} = {value!r} is not allowed: expected an integer >= 1")
    return value
