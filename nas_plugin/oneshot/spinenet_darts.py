"""DARTS (Liu et al., 2019) on the SpineNet detection supernet: ``strategy=darts`` (first order)
with ``search_space=spinenet``, the continuous relaxation of every searched key at once.

Every searched key (``model.blocks.block_<k>.{level,type,input_1,input_2}``,
``model.pyramid.fusion``) gets a vector of architecture logits over the sweep's values; a key the
space does not search keeps the app's value with weight 1. :class:`Relaxation` computes the
supernet's **expected** network under ``softmax(logits)``, every choice weighted by its
probability (levels, connections and outputs taken as independent):

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
tens of times the compute of one path, the price of a gradient to every alternative.

The search alternates DARTS's first-order steps on the halves of the training split: the
architecture (Adam on the logits, after ``warmup_epochs``) on FCOS's loss of the relaxed network
on one half, the weights (SGD with momentum, cosine schedule, gradient clipping) on the other.
After every epoch the derived architecture (argmax per key) is extracted with the supernet's
weights, its BatchNorm statistics re-estimated, and scored on val.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_plugin.hardware.device import Runtime
from nas_plugin.models.spinenet import (
    LEVELS,
    OUTPUT_LEVELS,
    check_model_config,
    fuse,
    level_sizes,
    resolve_input,
    smoothed,
)
from nas_plugin.oneshot.bilevel import BilevelTraining, epoch_loss
from nas_plugin.oneshot.settings import SearchSettings
from nas_plugin.oneshot.spinenet_search import (
    DERIVED_BN_IMAGES,
    SpineNetSearchResult,
    derived_cell,
    detection_loss,
    prob_metrics,
    searched_supernet,
)
from nas_plugin.supernets.spinenet import SpineNetSupernet, score_candidate, with_values
from nas_plugin.tasks.detection_data import DetectionData
from nas_plugin.tasks.training import optimizer_step

FIELDS = ("level", "type", "input_1", "input_2")
FUSION_KEY = "model.pyramid.fusion"
Weights = Mapping[str, tuple[Sequence[Any], torch.Tensor]]  # key -> (values, probabilities)


def block_key(k: int, field: str) -> str:
    return f"model.blocks.block_{k}.{field}"


def architecture_keys(num_blocks: int) -> list[str]:
    """Every key an architecture of ``num_blocks`` blocks sets."""
    keys = [block_key(k, f) for k in range(1, num_blocks + 1) for f in FIELDS]
    return [*keys, FUSION_KEY]


def app_values(base: Mapping[str, Any]) -> dict[str, Any]:
    """The app's value of every architecture key (``base``: its model config)."""
    args = check_model_config(base)
    values = {
        block_key(k, field): value
        for k, spec in enumerate(args["blocks"], start=1)
        for field, value in zip(FIELDS, spec, strict=True)
    }
    return {**values, FUSION_KEY: args["fusion"]}


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


def search_spinenet_darts(
    settings: SearchSettings,
    data: DetectionData,
    base: Mapping[str, Any],
    choices: Mapping[str, Sequence[Any]],
    resolution: int,
    seed: int,
    log_epoch: Callable[[int, dict[str, float]], None] | None = None,
    *,
    runtime: Runtime | None = None,
) -> SpineNetSearchResult:
    """First-order DARTS over ``choices`` (the sweep's space; the other keys as the app's model
    config ``base`` has them) on ``runtime`` (default: the CPU, fp32); the contract of
    :func:`~nas_plugin.oneshot.spinenet_search.search_spinenet`.

    Raises:
        ValueError: order 2; a latency term; too few images for two halves of a batch.
        FloatingPointError: the weight loss became NaN or infinite.
    """
    if settings.order != 1:
        raise ValueError(
            f"order={settings.order!r}: DARTS on the SpineNet supernet is first order only "
            "(its second-order step would run the relaxed detector four times a step); "
            "expected 1"
        )
    runtime = runtime or Runtime.cpu()
    device = runtime.device
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = searched_supernet(settings, data, base, resolution, runtime)
    backbone: SpineNetSupernet = model.detector.backbone
    keys = sorted(choices)
    logits = [
        nn.Parameter((1e-3 * torch.randn(len(choices[k]), generator=generator)).to(device))
        for k in keys
    ]
    fixed = {
        key: ([value], torch.ones(1, device=device))
        for key, value in app_values(base).items()
        if key not in choices
    }
    parts = BilevelTraining.of(model, logits, data, settings, seed, runtime)
    if min(len(parts.w_batches), len(parts.a_batches)) == 0:
        raise ValueError(
            f"the training split has {len(data.train)} image(s): too few for two halves of "
            f"batch_size={settings.batch_size}"
        )

    def relax(detach: bool) -> None:
        searched = {
            k: (list(choices[k]), F.softmax(v.detach() if detach else v, dim=-1))
            for k, v in zip(keys, logits, strict=True)
        }
        backbone.relaxation = Relaxation({**fixed, **searched})

    probs: list[dict[str, list[float]]] = []
    metrics: dict[str, float] = {}
    cell: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        for epoch in range(1, settings.epochs + 1):
            w_total = torch.zeros((), dtype=torch.float64, device=device)
            a_total = torch.zeros_like(w_total)
            seen = 0
            for (xw, yw), (xa, ya) in zip(parts.w_batches, parts.a_batches, strict=False):
                model.train()
                if epoch > settings.warmup_epochs:  # -- architecture step, on the other half --
                    parts.a_opt.zero_grad(set_to_none=True)
                    relax(detach=False)
                    loss = detection_loss(model, xa, ya, runtime)
                    parts.a_scaler.scale(loss).backward()
                    parts.a_scaler.step(parts.a_opt)
                    parts.a_scaler.update()
                    a_total += loss.detach().double() * len(ya)
                relax(detach=True)  # -- weight step, the architecture held --
                loss = detection_loss(model, xw, yw, runtime)
                optimizer_step(
                    loss, parts.w_opt, parts.w_scaler, parts.schedule, settings.grad_clip
                )
                w_total += loss.detach().double() * len(yw)
                seen += len(yw)
            backbone.relaxation = None
            train_loss = epoch_loss(w_total, seen, epoch)
            searched = list(zip(keys, logits, strict=True))
            best = {k: choices[k][int(v.detach().argmax())] for k, v in searched}
            arch = with_values(base, best)
            cell = derived_cell(arch)
            _, val = score_candidate(
                model, arch, data, DERIVED_BN_IMAGES, seed, runtime, per_class=False
            )
            probs.append({k: F.softmax(v.detach(), -1).cpu().tolist() for k, v in searched})
            metrics = {
                **prob_metrics(keys, choices, logits),
                "search_train_loss": train_loss,
                "search_derived_val_map_50": val["map_50"],
                "search_derived_val_map": val["map"],
                "search_seconds": time.perf_counter() - start,
            }
            if epoch > settings.warmup_epochs:
                metrics["search_arch_loss"] = a_total.item() / max(1, seen)
            if log_epoch is not None:
                log_epoch(epoch, metrics)
    finally:
        backbone.relaxation = None
    return SpineNetSearchResult(cell, probs, metrics)
