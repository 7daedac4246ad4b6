"""What the Auto-DeepLab searches share (the bilevel ones in
:mod:`~nas_plugin.oneshot.autodeeplab_search`, ENAS in :mod:`~nas_plugin.oneshot.autodeeplab_enas`):
the supernet's size, the result, the ``beta`` metrics and the scoring of one architecture as a
sub-network of the supernet."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas_plugin.hardware.device import Runtime
from nas_plugin.models.autodeeplab import LEVEL_NAMES
from nas_plugin.space.autodeeplab import MOVES
from nas_plugin.supernets.autodeeplab import AutoDeepLabSupernet, reachable, valid_moves
from nas_plugin.tasks.segmentation import evaluate
from nas_plugin.tasks.segmentation_data import SegmentationData
from nas_plugin.tasks.vision import recalibrate_batchnorm

# Training images the derived sub-network's BatchNorm statistics are re-estimated on.
DERIVED_BN_IMAGES = 256
EVAL_BATCH_SIZE = 256


@dataclass
class AutoDeepLabArch:
    """The supernet's size: the app's ``model.layers``, ``model.channels``, ``model.aspp``."""

    layers: int
    channels: int
    aspp_channels: int
    rates: tuple[int, ...]


@dataclass
class AutoDeepLabSearchResult:
    ops: tuple[str, ...]
    moves: tuple[str, ...]
    alphas: list[list[list[float]]]  # per epoch: softmax(alpha), 6 x 5
    betas: list[list[list[list[float]]]]  # per epoch: move probabilities, layers x 4 x 3
    metrics: dict[str, float]


def beta_metrics(probs: torch.Tensor) -> dict[str, float]:
    """``beta.layer_<k>.<level>.<move>`` (level ``1_4`` ... ``1_32``): the move's probability
    from that level, for the reachable levels and valid moves only."""
    values = probs.detach().cpu().tolist()
    out = {}
    for k in range(len(values)):
        for level in reachable(k):
            name = LEVEL_NAMES[level].replace("/", "_")
            for m in valid_moves(level):
                out[f"beta.layer_{k + 1}.{name}.{MOVES[m]}"] = float(values[k][level][m])
    return out


class _SubNetwork(nn.Module):
    """Raw images -> preprocess -> one architecture of the supernet (for scoring)."""

    def __init__(
        self,
        preprocess: nn.Module,
        net: AutoDeepLabSupernet,
        ops: Sequence[str],
        moves: Sequence[str],
    ) -> None:
        super().__init__()
        self.preprocess, self.net = preprocess, net
        self.ops, self.moves = tuple(ops), tuple(moves)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.forward_path(self.preprocess(images), self.ops, self.moves)


def score_subnetwork(
    net: AutoDeepLabSupernet,
    preprocess: nn.Module,
    ops: Sequence[str],
    moves: Sequence[str],
    recalibration: Any,
    val_batches: Any,
    data: SegmentationData,
    runtime: Runtime,
) -> dict[str, float]:
    """Val scores of one architecture with the supernet's weights. Its BatchNorm statistics are
    re-estimated on training images (the supernet's mix every path's); the search's own are
    kept (restored afterwards), though training-mode steps use batch statistics anyway."""
    sub = _SubNetwork(preprocess, net, ops, moves)
    saved = copy.deepcopy(net.state_dict())
    recalibrate_batchnorm(sub, recalibration, runtime=runtime)
    scores = evaluate(sub, val_batches, data, runtime=runtime)
    net.load_state_dict(saved)
    net.train()
    return scores
