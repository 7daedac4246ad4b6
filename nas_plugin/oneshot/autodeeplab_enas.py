"""ENAS (Pham et al. 2018) on the Auto-DeepLab supernet (:mod:`nas_plugin.supernets.autodeeplab`):
the shape of :mod:`nas_plugin.oneshot.enas`, with its controller, REINFORCE step and derive step.

The controller (:class:`~nas_plugin.oneshot.enas.Controller` with ``layers``) samples the six
cell operations, then one move per layer from the path's current level (``down | same`` at 1/4,
``same | up`` at 1/32: the other move's logit is masked, so a sampled path never leaves the
trellis). Every epoch, on the halves of the training split:

(a) **shared weights**: one pass over the weight half, each step training the one sampled child
    (its cells, operations and head only), per-pixel cross-entropy with ``ignore_index``, SGD
    with Nesterov momentum, cosine schedule, gradient clipping;
(b) **controller**: ``controller_steps`` REINFORCE steps
    (:func:`~nas_plugin.oneshot.enas.reinforce_step`: moving-average baseline, entropy bonus),
    the reward being the sampled child's **mIoU** on one minibatch of the other half with the
    inherited weights (BatchNorm in training mode, as ENAS). mIoU rather than pixel accuracy:
    the background is most pixels, so every child's pixel accuracy is close to the background
    share; the classes of a minibatch of scenes are nearly always all present, and a class in
    neither truth nor prediction is left out of the mean.

Derive: ``derive_samples`` architectures sampled from the trained controller, each scored by
mIoU on one fixed held-out batch with the inherited weights; the best is the search's. Every
epoch the controller's most likely architecture (the derived one at the last epoch) is scored on
the val split as the bilevel searches' derived one is (BatchNorm re-estimated).

The controller lives on the CPU (see :mod:`nas_plugin.oneshot.enas`); the supernet, batches and
rewards on the runtime's device, weight steps under its autocast.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_plugin.hardware.device import Runtime
from nas_plugin.models.autodeeplab import LEVELS, path_levels
from nas_plugin.oneshot.autodeeplab_parts import (
    DERIVED_BN_IMAGES,
    EVAL_BATCH_SIZE,
    AutoDeepLabArch,
    AutoDeepLabSearchResult,
    beta_metrics,
    score_subnetwork,
)
from nas_plugin.oneshot.data import loader
from nas_plugin.oneshot.enas import (
    DERIVE_IMAGES,
    MARGINAL_SAMPLES,
    Controller,
    EnasTraining,
    collapse_metrics,
    derive_cell,
    loss_reward,
    score_name,
    to_ops,
    train_controller,
)
from nas_plugin.oneshot.settings import SearchSettings
from nas_plugin.space.autodeeplab import MOVES
from nas_plugin.space.nb201 import EDGE_KEYS, EDGES, OPS
from nas_plugin.supernets.autodeeplab import AutoDeepLabSupernet
from nas_plugin.tasks.segmentation import iou_scores, recalibration_loader
from nas_plugin.tasks.segmentation_data import SegmentationData

Architecture = tuple[tuple[str, ...], tuple[str, ...]]  # (cell operations, path moves)


def to_architecture(row: torch.Tensor) -> Architecture:
    """A controller sample (6 operation indices, then one move index per layer)."""
    return to_ops(row[: len(EDGES)]), tuple(MOVES[int(m)] for m in row[len(EDGES) :])


def move_frequencies(samples: torch.Tensor, layers: int) -> torch.Tensor:
    """layers x 4 x 3: per layer and level, how often the sampled paths at that level took each
    move (0 where no sample reached the level)."""
    counts = torch.zeros(layers, LEVELS, len(MOVES))
    levels = torch.zeros(samples.shape[0], dtype=torch.long)
    for k in range(layers):
        moves = samples[:, len(EDGES) + k]
        counts[k].index_put_((levels, moves), torch.ones(len(moves)), accumulate=True)
        levels = levels + torch.tensor([1, 0, -1])[moves]
    return counts / counts.sum(-1, keepdim=True).clamp_min(1)


def batch_miou(logits: torch.Tensor, masks: torch.Tensor, data: SegmentationData) -> float:
    """mIoU of one batch's predictions (``ignore_index`` pixels left out)."""
    classes = data.num_classes
    valid = masks != data.ignore_index
    truth, predicted = masks[valid], logits.argmax(dim=1)[valid]
    confusion = torch.bincount(truth * classes + predicted, minlength=classes * classes)
    return iou_scores(confusion.reshape(classes, classes).cpu(), data.class_names)["miou"]


def search_autodeeplab_enas(
    settings: SearchSettings,
    data: SegmentationData,
    preprocess: nn.Module,
    arch: AutoDeepLabArch,
    seed: int,
    log_epoch: Callable[[int, dict[str, float]], None] | None = None,
    *,
    runtime: Runtime | None = None,
) -> AutoDeepLabSearchResult:
    """ENAS on ``runtime`` (default: the CPU, fp32); the contract of
    :func:`~nas_plugin.oneshot.autodeeplab_search.search_autodeeplab` (``alphas``/``betas``:
    the controller's operation and move frequencies over :data:`MARGINAL_SAMPLES` samples, per
    epoch)."""
    runtime = runtime or Runtime.cpu()
    device = runtime.device
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = runtime.prepare(
        AutoDeepLabSupernet(
            arch.layers,
            data.num_classes,
            data.in_chans,
            arch.channels,
            arch.aspp_channels,
            arch.rates,
        )
    )
    controller = Controller(
        settings.lstm_size, settings.tanh_constant, settings.temperature, layers=arch.layers
    )
    preprocess = copy.deepcopy(preprocess).to(device)  # the caller's may be shared
    training = EnasTraining.of(net, controller, data, settings, seed, runtime)
    recalibration = recalibration_loader(data, DERIVED_BN_IMAGES, seed)
    val_batches = data.loader(data.val, EVAL_BATCH_SIZE)
    ignore = data.ignore_index

    def child_miou(architecture: Architecture, x: torch.Tensor, y: torch.Tensor) -> float:
        # Training-mode BatchNorm (the batch's statistics, as ENAS): no gradient.
        with torch.no_grad(), runtime.autocast():
            logits = net.forward_path(x, *architecture).float()
        if settings.reward == "loss":
            return loss_reward(F.cross_entropy(logits, y, ignore_index=ignore))
        return batch_miou(logits, y, data)

    def sampled_miou(row: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        x, y = batch
        x, y = preprocess(runtime.to_device(x)), runtime.to_device(y)
        return child_miou(to_architecture(row), x, y)

    def held_out() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(iter(loader(training.a_half, DERIVE_IMAGES, seed + 2, data)))
        return preprocess(runtime.to_device(x)), runtime.to_device(y)

    def child_loss(
        row: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        x, y = preprocess(runtime.to_device(batch[0])), runtime.to_device(batch[1])
        net.train()
        with runtime.autocast():
            logits = net.forward_path(x, *to_architecture(row))
        return F.cross_entropy(logits.float(), y, ignore_index=ignore), len(y)

    alphas: list[list[list[float]]] = []
    betas: list[list[list[list[float]]]] = []
    metrics: dict[str, float] = {}
    baseline: float | None = None
    reward_batches = training.reward_batches()
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        # (a) the shared weights, one controller-sampled child per step
        train_loss = training.train_weights(
            controller, generator, settings.grad_clip, epoch, child_loss
        )
        # (b) the controller, by REINFORCE on held-out minibatches
        phase = train_controller(
            controller,
            training.c_opt,
            reward_batches,
            sampled_miou,
            settings,
            baseline,
            generator,
            len(EDGES) + arch.layers,
        )
        baseline = phase.baseline
        with torch.no_grad():
            samples, _, _ = controller(batch=MARGINAL_SAMPLES, generator=generator)
        op_freqs = F.one_hot(samples[:, : len(EDGES)], len(OPS)).float().mean(0)
        move_freqs = move_frequencies(samples, arch.layers)
        alphas.append(op_freqs.tolist())
        betas.append(move_freqs.tolist())
        if epoch == settings.epochs:
            ops, moves = derive_cell(
                controller, settings, generator, child_miou, held_out(), to_architecture
            )
        else:
            ops, moves = to_architecture(controller.greedy_indices())
        scores = score_subnetwork(
            net, preprocess, ops, moves, recalibration, val_batches, data, runtime
        )
        metrics = {
            **_frequency_metrics(op_freqs),
            **beta_metrics(move_freqs),
            **{
                f"search_path.layer_{k}": float(2 ** (lv + 2))
                for k, lv in enumerate(path_levels(moves), 1)
            },
            "search_train_loss": train_loss,
            # search_controller_entropy: per decision (6 operations of 5, then moves of 2 or 3)
            **phase.metrics(score_name(settings, "miou")),
            "search_derived_val_miou": scores["miou"],
            "search_derived_val_pixel_accuracy": scores["pixel_accuracy"],
            **collapse_metrics(ops),
            "search_seconds": time.perf_counter() - start,
        }
        if log_epoch is not None:
            log_epoch(epoch, metrics)
    return AutoDeepLabSearchResult(ops, moves, alphas, betas, metrics)


def _frequency_metrics(freqs: torch.Tensor) -> dict[str, float]:
    """``alpha.<edge>.<op>``: how often the controller samples the operation on the edge."""
    values: Sequence[Sequence[float]] = freqs.tolist()
    return {
        f"alpha.{key}.{op}": float(values[e][k])
        for e, key in enumerate(EDGE_KEYS)
        for k, op in enumerate(OPS)
    }
