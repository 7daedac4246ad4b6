"""DARTS's continuous relaxation (Liu et al., 2019) of the SpineNet detection supernet:
``strategy=darts`` (first order) with ``search_space=spinenet``, every searched key at once.

Every searched key (``model.blocks.block_<k>.{level,type,input_1,input_2}``,
``model.pyramid.fusion``) gets a vector of architecture logits over the sweep's values; a key the
space does not search keeps the app's value with weight 1 (:func:`fixed_weights`).
:class:`Relaxation` computes the supernet's **expected** network under ``softmax(logits)``,
every choice weighted by its probability (levels, connections and outputs taken as
independent):

- a block holds one feature map per level it may take, each the type-weighted sum of its
  blocks (``residual``, ``bottleneck``) run on its merged inputs at that level;
- its input from an earlier block is that block's maps resampled to this level, weighted by the
  earlier block's level probabilities; each earlier block counts with the probability that one
  of the two inputs picks it (``P1 + P2 - P1 P2``: two equal inputs feed once, as in SpineNet);
- pyramid level ``L`` reads the last block at level ``L`` (SpineNet's rule): block ``j`` with
  probability ``p_j(L)`` times that of no later block being at ``L``; if no block is there, the
  last block at its own level;
- the fusions (``none``, ``top_down``, ``bidirectional``) are mixed by their weights.

With one-hot weights it computes exactly the architecture they pick (tested). Where the
single-path searches (:mod:`~nas_plugin.oneshot.spinenet_search`) run one block per step, the
relaxation runs a block per (level, type) and a resampling per (input, its level, this level):
about five times a single path's time per step here (0.7 s against 0.13 s for 32 images on one
core), the price of a gradient to every alternative.

The search (:func:`~nas_plugin.oneshot.spinenet_search.search_spinenet`, the loop gdas and
proxyless share) alternates DARTS's first-order steps on the halves of the training split: the
architecture (Adam on the logits, after ``warmup_epochs``) on FCOS's loss of the relaxed
network on one half, the weights on the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nas_plugin.models.spinenet import (
    LEVELS,
    OUTPUT_LEVELS,
    architecture_cell,
    fuse,
    level_sizes,
    resolve_input,
    smoothed,
)
from nas_plugin.supernets.spinenet import SpineNetSupernet

FIELDS = ("level", "type", "input_1", "input_2")
FUSION_KEY = "model.pyramid.fusion"
Weights = Mapping[str, tuple[Sequence[Any], torch.Tensor]]  # key -> (values, probabilities)


def block_key(k: int, field: str) -> str:
    return f"model.blocks.block_{k}.{field}"


def fixed_weights(
    base: Mapping[str, Any], choices: Mapping[str, Sequence[Any]], device: torch.device
) -> dict[str, tuple[list[Any], torch.Tensor]]:
    """Every architecture key ``choices`` (the sweep's space) does not search: the app's value
    (``base``: its model config) with weight 1."""
    return {
        key: ([value], torch.ones(1, device=device))
        for key, value in app_values(base).items()
        if key not in choices
    }


def app_values(base: Mapping[str, Any]) -> dict[str, Any]:
    """The app's value of every architecture key (``base``: its model config)."""
    return {f"model.{key}": value for key, value in architecture_cell(base).items()}


class Relaxation:
    """The expected SpineNet under ``weights`` (every architecture key -> its values and their
    probabilities, summing to 1), computed with a :class:`SpineNetSupernet`'s modules; set as
    the supernet's ``relaxation`` for its forward to compute it."""

    def __init__(self, weights: Weights) -> None:
        self.weights = weights

    def _probs(self, key: str) -> list[tuple[Any, torch.Tensor]]:
        values, probs = self.weights[key]
        return list(zip(values, probs, strict=True))

    def __call__(self, net: SpineNetSupernet, images: torch.Tensor) -> Any:
        stem = net.stem(images)
        sizes = level_sizes(stem)
        one = stem.new_ones(())
        # Per block: its feature map at each level it may take, and that level's probability.
        maps: list[dict[int, torch.Tensor]] = [{LEVELS[0]: stem}]
        level_probs: list[dict[int, torch.Tensor]] = [{LEVELS[0]: one}]
        for k in range(1, net.num_blocks + 1):
            inputs = self._input_probs(k)
            out = {}
            for level in self.weights[block_key(k, "level")][0]:
                merged = sum(
                    p_input
                    * sum(
                        p_source
                        * net.choice_resamples[f"{k}_{j}_{source}_{level}"](
                            maps[j][source], sizes[level]
                        )
                        for source, p_source in level_probs[j].items()
                    )
                    for j, p_input in inputs.items()
                )
                x = F.relu(merged)
                out[level] = sum(
                    p_type * net.choice_blocks[f"{k}_{level}_{kind}"](x)
                    for kind, p_type in self._probs(block_key(k, "type"))
                )
            maps.append(out)
            level_probs.append(dict(self._probs(block_key(k, "level"))))
        pyramid = [
            self._pyramid_level(net, o, level, maps, level_probs, sizes)
            for o, level in enumerate(OUTPUT_LEVELS)
        ]
        fused = [0.0] * len(pyramid)
        for fusion, p_fusion in self._probs(FUSION_KEY):
            for i, p in enumerate(fuse(pyramid, fusion)):
                fused[i] = fused[i] + p_fusion * p
        return smoothed(net.smooth, fused)

    def _input_probs(self, k: int) -> dict[int, torch.Tensor]:
        """Source block -> the probability that one of block ``k``'s two inputs picks it."""
        firsts: dict[int, torch.Tensor] = {}
        seconds: dict[int, torch.Tensor] = {}
        for field, into in (("input_1", firsts), ("input_2", seconds)):
            for offset, p in self._probs(block_key(k, field)):
                j = resolve_input(k, int(offset))
                into[j] = into[j] + p if j in into else p
        sources = sorted(set(firsts) | set(seconds))
        zero = next(iter(firsts.values())).new_zeros(())
        either = {}
        for j in sources:
            first, second = firsts.get(j, zero), seconds.get(j, zero)
            either[j] = first + second - first * second
        return either

    @staticmethod
    def _pyramid_level(
        net: SpineNetSupernet,
        o: int,
        level: int,
        maps: Sequence[Mapping[int, torch.Tensor]],
        level_probs: Sequence[Mapping[int, torch.Tensor]],
        sizes: Mapping[int, tuple[int, int]],
    ) -> torch.Tensor:
        """Pyramid level ``level`` (the ``o``-th): the expected lateral of its source block."""
        last = len(maps) - 1
        total: Any = 0.0
        none_later: Any = 1.0  # the probability that no block after j is at this level
        for j in range(last, -1, -1):
            p = level_probs[j].get(level)
            if p is None:
                continue
            lateral = net.choice_laterals[f"{o}_{j}_{level}"]
            total = total + none_later * p * lateral(maps[j][level], sizes[level])
            none_later = none_later * (1 - p)
        if level == LEVELS[0]:
            return total  # the stem is at this level: some block always is
        # No block at this level: the last block, at the level it is at.
        rest: Any = 1.0
        for j in range(last):
            p = level_probs[j].get(level)
            if p is not None:
                rest = rest * (1 - p)
        for source, p in level_probs[last].items():
            if source != level:
                lateral = net.choice_laterals[f"{o}_{last}_{source}"]
                total = total + rest * p * lateral(maps[last][source], sizes[level])
        return total
