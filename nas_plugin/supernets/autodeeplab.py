"""The Auto-DeepLab supernet (Liu et al., CVPR 2019): every cell operation and every path
through the trellis of resolutions 1/4 .. 1/32, for :mod:`nas_plugin.models.autodeeplab`.

The stem brings the image to 1/4 (level 0). At layer ``k`` every level ``l`` reachable in ``k``
moves has a node::

    h[k][l] = SuperCell_{k,l}( sum over s in {l-1, l, l+1} of
                                 beta(k, s -> l) * Transition_{k, s->l}(h[k-1][s]) )

with the NB201 :class:`~nas_plugin.supernets.nb201.SuperCell` (one per node; the cell's
``alpha``, 6 edges x 5 operations, is shared by every node, as the derived network shares one
cell) and :class:`~nas_plugin.models.autodeeplab.Transition`, so channels (``channels * 2**l``)
and sizes follow the stand-alone network's rules. ``beta`` is normalised over each node's
outgoing moves (softmax over the moves valid at its level: ``down | same`` at 1/4, ``same | up``
at 1/32, Auto-DeepLab's convention). At the last layer every level has an ASPP head and a 1x1
classifier; their logits, upsampled to the input's size, are summed (as Auto-DeepLab).

One forward, given cell weights (6 x 5) and move weights (``layers`` x 4 levels x 3 moves,
:data:`~nas_plugin.space.autodeeplab.MOVES` order): soft weights are the continuous relaxation
(DARTS); one-hot ones (GDAS's Gumbel samples, or a derived architecture) with ``active_only``
compute only what has a non-zero weight, i.e. one path of cells with one operation per edge.

The derived architecture: the argmax of ``alpha`` per edge and the Viterbi path through
``beta`` (:func:`viterbi_path`), whose moves are ``model.path.layer_<k>`` values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_plugin.models.autodeeplab import (
    ASPP,
    LEVELS,
    Transition,
    level_size,
    make_stem,
)
from nas_plugin.space.autodeeplab import MOVES
from nas_plugin.space.nb201 import EDGES, OPS
from nas_plugin.supernets.nb201 import SuperCell, gumbel_hard

_STEP = {"down": 1, "same": 0, "up": -1}


def valid_moves(level: int) -> tuple[int, ...]:
    """Indices into MOVES of the moves that stay on the trellis from ``level``."""
    return tuple(m for m, move in enumerate(MOVES) if 0 <= level + _STEP[move] < LEVELS)


def move_mask() -> torch.Tensor:
    """LEVELS x 3, True where the move is valid from the level."""
    mask = torch.zeros(LEVELS, len(MOVES), dtype=torch.bool)
    for level in range(LEVELS):
        mask[level, list(valid_moves(level))] = True
    return mask


def reachable(layer: int) -> tuple[int, ...]:
    """The levels with a node after ``layer`` moves (layer 0: the stem, at 1/4)."""
    return tuple(range(min(layer, LEVELS - 1) + 1))


def move_probs(beta: torch.Tensor) -> torch.Tensor:
    """``beta`` (layers x LEVELS x 3) normalised over each level's valid outgoing moves; the
    invalid moves get 0."""
    mask = move_mask().to(beta.device)
    return F.softmax(beta.masked_fill(~mask, float("-inf")), dim=-1)


class AutoDeepLabSupernet(nn.Module):
    """Stem, a SuperCell per (layer, level) node with its incoming transitions, an ASPP head
    and classifier per level at the last layer."""

    def __init__(
        self,
        layers: int,
        num_classes: int,
        in_chans: int = 3,
        channels: int = 8,
        aspp_channels: int = 32,
        rates: Sequence[int] = (1, 2, 3),
    ) -> None:
        super().__init__()
        self.layers, self.channels = layers, channels
        self.stem = make_stem(in_chans, channels)
        # cells["<k>_<l>"], transitions["<k>_<s>_<l>"] (k 1-based): ModuleDicts need str keys.
        self.cells = nn.ModuleDict()
        self.transitions = nn.ModuleDict()
        for k in range(1, layers + 1):
            for level in reachable(k):
                self.cells[f"{k}_{level}"] = SuperCell(channels * 2**level)
                for source in (level - 1, level, level + 1):
                    if source in reachable(k - 1):
                        self.transitions[f"{k}_{source}_{level}"] = Transition(
                            level - source, channels * 2**source, channels * 2**level
                        )
        self.heads = nn.ModuleDict(
            {
                str(level): nn.Sequential(
                    ASPP(channels * 2**level, aspp_channels, rates),
                    nn.Conv2d(aspp_channels, num_classes, 1),
                )
                for level in reachable(layers)
            }
        )

    def forward(
        self,
        images: torch.Tensor,
        cell_weights: torch.Tensor,
        move_weights: torch.Tensor,
        active_only: bool = False,
        cell_compute: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits N x classes x H x W; ``cell_weights`` 6 x 5, ``move_weights`` layers x 4 x 3
        (rows of unreachable or invalid moves are ignored). ``cell_compute`` (6 x 5, bool; with
        ``active_only``) marks the operations to run instead of the non-zero weights
        (ProxylessNAS's two-path step runs its inactive operation too, with weight 0)."""
        if tuple(cell_weights.shape) != (len(EDGES), len(OPS)):
            raise ValueError(f"cell_weights has shape {tuple(cell_weights.shape)}; expected 6 x 5")
        if tuple(move_weights.shape) != (self.layers, LEVELS, len(MOVES)):
            raise ValueError(
                f"move_weights has shape {tuple(move_weights.shape)}; expected "
                f"({self.layers}, {LEVELS}, {len(MOVES)})"
            )
        # Read once per forward as Python lists: one wait for the device, not one per weight.
        cell_mask = (cell_weights.detach() != 0).tolist() if active_only else None
        if active_only and cell_compute is not None:
            cell_mask = cell_compute.tolist()
        moves_used = (move_weights.detach() != 0).tolist() if active_only else None
        height, width = images.shape[-2:]
        sizes = [level_size(height, width, level) for level in range(LEVELS)]
        nodes = {0: self.stem(images)}
        for k in range(1, self.layers + 1):
            new: dict[int, torch.Tensor] = {}
            for level in reachable(k):
                terms = []
                for source in (level - 1, level, level + 1):
                    if source not in nodes:
                        continue
                    move = MOVES.index(_move_name(level - source))
                    if moves_used is not None and not moves_used[k - 1][source][move]:
                        continue
                    transition = self.transitions[f"{k}_{source}_{level}"]
                    weight = move_weights[k - 1, source, move]
                    terms.append(weight * transition(nodes[source], sizes[level]))
                if terms:
                    x = sum(terms[1:], terms[0])
                    cell = self.cells[f"{k}_{level}"]
                    new[level] = cell(x, weights=cell_weights, compute=cell_mask)
            nodes = new
        size = (height, width)
        logits = [
            F.interpolate(self.heads[str(lv)](x), size=size, mode="bilinear", align_corners=False)
            for lv, x in nodes.items()
        ]
        return sum(logits[1:], logits[0])

    def forward_path(
        self, images: torch.Tensor, ops: Sequence[str], moves: Sequence[str]
    ) -> torch.Tensor:
        """The sub-network of one architecture (cell ``ops``, path ``moves``), with the
        supernet's weights: only its cells, operations and final head are computed."""
        device = images.device
        return self(images, one_hot_cell(ops, device), one_hot_path(moves, device), True)


def _move_name(step: int) -> str:
    return {1: "down", 0: "same", -1: "up"}[step]


def one_hot_cell(ops: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """6 x 5 cell weights with a 1 at each edge's operation."""
    index = torch.tensor([OPS.index(op) for op in ops])
    return F.one_hot(index, len(OPS)).float().to(device)


def one_hot_path(moves: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """layers x 4 x 3 move weights with a 1 at each layer's move from the path's level. A move
    off the trellis (the stand-alone network keeps its level) is the ``same`` move."""
    weights = torch.zeros(len(moves), LEVELS, len(MOVES))
    level = 0
    for k, move in enumerate(moves):
        nxt = min(max(level + _STEP[move], 0), LEVELS - 1)
        weights[k, level, MOVES.index(_move_name(nxt - level))] = 1.0
        level = nxt
    return weights.to(device)


def gumbel_path(
    beta: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """GDAS's path sample: layer by layer, one valid move from the current level by Gumbel-max
    over its ``beta`` (straight-through Gumbel-softmax gradient). Returns the move weights
    (one-hot in value, layers x 4 x 3) and the moves."""
    rows, moves, level = [], [], 0
    for k in range(beta.shape[0]):
        valid = list(valid_moves(level))
        hard = gumbel_hard(beta[k, level, valid], tau, generator)
        row = torch.zeros(LEVELS, len(MOVES), dtype=hard.dtype, device=beta.device)
        row[level, valid] = hard
        rows.append(row)
        move = MOVES[valid[int(hard.detach().argmax())]]
        moves.append(move)
        level += _STEP[move]
    return torch.stack(rows), tuple(moves)


def sampled_path(
    beta: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """ProxylessNAS's binarised path: layer by layer, one valid move from the current level
    drawn from its :func:`move_probs` (on the CPU with ``generator``: a seed gives the same path
    on any device). The move weights are one-hot in value (layers x 4 x 3) with BinaryConnect's
    gradient through the level's softmax (as :func:`~nas_plugin.supernets.nb201.binary_gates`).
    Returns the weights and the moves."""
    probs = move_probs(beta)
    rows, moves, level = [], [], 0
    for k in range(beta.shape[0]):
        p = probs[k, level]
        chosen = int(torch.multinomial(p.detach().float().cpu(), 1, generator=generator))
        hard = F.one_hot(torch.tensor(chosen, device=beta.device), len(MOVES)).to(p.dtype)
        row = torch.zeros(LEVELS, len(MOVES), dtype=p.dtype, device=beta.device)
        row[level] = hard - p.detach() + p
        rows.append(row)
        moves.append(MOVES[chosen])
        level += _STEP[MOVES[chosen]]
    return torch.stack(rows), tuple(moves)


def viterbi_path(probs: torch.Tensor) -> tuple[str, ...]:
    """The most probable path from 1/4 through the trellis: ``probs`` (layers x 4 x 3) are the
    move probabilities of each level (:func:`move_probs`); a path's probability is the product
    of its moves'. Invalid moves (``up`` at 1/4, ``down`` at 1/32) are never chosen."""
    logp = torch.log(probs.detach().double().cpu()).tolist()
    # best[level] = (log probability, moves) of the best path reaching it.
    best: dict[int, tuple[float, tuple[str, ...]]] = {0: (0.0, ())}
    for k in range(len(logp)):
        new: dict[int, tuple[float, tuple[str, ...]]] = {}
        for source, (score, moves) in sorted(best.items()):
            for m in valid_moves(source):
                target = source + _STEP[MOVES[m]]
                candidate = (score + logp[k][source][m], (*moves, MOVES[m]))
                if target not in new or candidate[0] > new[target][0]:
                    new[target] = candidate
        best = new
    return max(best.values(), key=lambda item: item[0])[1]
