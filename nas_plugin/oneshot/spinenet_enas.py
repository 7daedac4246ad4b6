"""ENAS (Pham et al. 2018) on the SpineNet detection supernet
(:mod:`nas_plugin.supernets.spinenet`): ``strategy=enas`` with ``search_space=spinenet``, the
shape of :mod:`nas_plugin.oneshot.enas`.

The controller (:class:`~nas_plugin.oneshot.enas.ChoiceController`) takes one LSTM step per
searched key of the sweep's space (``model.blocks.block_<k>.{level,type,input_1,input_2}``,
``model.pyramid.fusion``; sorted), each with its own head over that key's values. Unlike the
gradient searches it needs no gradient through the architecture, so a sampled level may change
every tensor after it: the supernet simply computes the sampled detector. Every epoch, on the
halves of the training split:

(a) **shared weights**: one pass over the weight half, each step training the one sampled
    detector (its blocks, resamplings and laterals; stem and FCOS head are shared) on FCOS's
    losses, SGD with Nesterov momentum, cosine schedule, gradient clipping;
(b) **controller**: ``controller_steps`` REINFORCE steps
    (:func:`~nas_plugin.oneshot.enas.train_controller`: moving-average baseline, entropy
    bonus), the reward being the sampled detector's **mAP@0.5** (torchmetrics, as every
    detection score here) on one minibatch of the other half with the inherited weights.
    BatchNorm normalises with the minibatch's statistics, as in ENAS (the supernet's running
    statistics mix every path), without touching the running ones.

Derive: ``derive_samples`` architectures from the trained controller (distinct networks scored
once), each by mAP@0.5 on one fixed held-out batch of :data:`DERIVE_IMAGES`; the best is the
search's. After every epoch the controller's most likely architecture (at the last epoch the
derived one) is extracted with the supernet's weights, its BatchNorm statistics re-estimated,
and scored on val (``search_derived_val_map_50``, ``search_derived_val_map``).

The controller lives on the CPU (see :mod:`nas_plugin.oneshot.enas`); the supernet, batches and
rewards on the runtime's device, weight steps under its autocast.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from nas_plugin.hardware.device import Runtime
from nas_plugin.models.spinenet import architecture_cell, check_model_config, network_key
from nas_plugin.oneshot.data import loader
from nas_plugin.oneshot.enas import (
    MARGINAL_SAMPLES,
    ChoiceController,
    EnasTraining,
    derive_cell,
    loss_reward,
    score_name,
    train_controller,
)
from nas_plugin.oneshot.settings import SearchSettings
from nas_plugin.oneshot.spinenet_search import (
    DERIVED_BN_IMAGES,
    SpineNetSearchResult,
    detection_loss,
    prob_metrics,
    searched_supernet,
)
from nas_plugin.supernets.spinenet import (
    SpineNetSupernet,
    score_candidate,
    with_values,
)
from nas_plugin.tasks.detection import map_50, scorable
from nas_plugin.tasks.detection_data import DetectionData

# Held-out images every derive candidate is scored on (one fixed batch). Fewer than the NB201
# search's 256: a detector's forward, box decoding and NMS cost far more than a classifier's.
DERIVE_IMAGES = 96


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with each batch's own statistics and leave their running
    statistics as they are (momentum 0), whatever mode the rest of ``model`` is in."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum) for m in norms]
    for norm in norms:
        norm.train()
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, (training, momentum) in zip(norms, saved, strict=True):
            norm.train(training)
            norm.momentum = momentum


def search_spinenet_enas(
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
    """ENAS over ``choices`` (the sweep's space; the other keys as the app's model config
    ``base`` has them) on ``runtime`` (default: the CPU, fp32); the contract of
    :func:`~nas_plugin.oneshot.spinenet_search.search_spinenet` (``probs``: per epoch, the
    controller's value frequencies of every searched key over :data:`MARGINAL_SAMPLES`
    samples).

    Raises:
        ValueError: a latency term; too few images for two halves of a batch.
        FloatingPointError: the weight loss became NaN or infinite.
    """
    runtime = runtime or Runtime.cpu()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = searched_supernet(settings, data, base, resolution, runtime)
    backbone: SpineNetSupernet = model.detector.backbone
    keys = sorted(choices)
    controller = ChoiceController(
        [len(choices[k]) for k in keys],
        settings.lstm_size,
        settings.tanh_constant,
        settings.temperature,
    )
    training = EnasTraining.of(model, controller, data, settings, seed, runtime)

    def values_of(row: Sequence[int] | torch.Tensor) -> dict[str, Any]:
        return {k: choices[k][int(i)] for k, i in zip(keys, row, strict=True)}

    def arch_of(row: Sequence[int] | torch.Tensor) -> dict[str, Any]:
        return with_values(base, values_of(row))

    def use(row: Sequence[int] | torch.Tensor) -> None:
        args = check_model_config(arch_of(row))
        backbone.set_arch(args["blocks"], args["fusion"])

    def child_map(row: Sequence[int], images: torch.Tensor, targets: list) -> float:
        use(row)
        if settings.reward == "loss":  # FCOS returns its losses in train mode
            model.train()
            with torch.no_grad(), batch_statistics(model):
                return loss_reward(detection_loss(model, images, list(targets), runtime))
        model.eval()
        with torch.no_grad(), batch_statistics(model), runtime.autocast():
            found = model.detect(runtime.to_device(images))
        return map_50(scorable(found), list(targets))

    def sampled_map(row: torch.Tensor, batch: tuple[torch.Tensor, list]) -> float:
        return child_map(tuple(row.tolist()), *batch)

    app = OmegaConf.create({"model": base})  # what the sweep's network_key reads
    first_of_network: dict[Any, tuple[int, ...]] = {}

    def network_of(row: torch.Tensor) -> tuple[int, ...]:
        """Samples that build the same detector (a block that feeds nothing, two inputs in
        either order) decode to the first such sample: the derive step scores it once."""
        indices = tuple(row.tolist())
        return first_of_network.setdefault(network_key(values_of(indices), app), indices)

    def child_loss(row: torch.Tensor, batch: tuple[torch.Tensor, list]) -> tuple[torch.Tensor, int]:
        use(row)
        model.train()
        return detection_loss(model, *batch, runtime), len(batch[1])

    probs: list[dict[str, list[float]]] = []
    metrics: dict[str, float] = {}
    cell: dict[str, Any] = {}
    baseline: float | None = None
    reward_batches = training.reward_batches()
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        # (a) the shared weights, one controller-sampled detector per step
        train_loss = training.train_weights(
            controller, generator, settings.grad_clip, epoch, child_loss
        )
        # (b) the controller, by REINFORCE on held-out minibatches
        phase = train_controller(
            controller,
            training.c_opt,
            reward_batches,
            sampled_map,
            settings,
            baseline,
            generator,
            len(keys),
        )
        baseline = phase.baseline
        with torch.no_grad():
            samples, _, _ = controller(batch=MARGINAL_SAMPLES, generator=generator)
        frequencies = controller.frequencies(samples)
        probs.append(dict(zip(keys, frequencies, strict=True)))
        if epoch == settings.epochs:
            row = derive_cell(
                controller,
                settings,
                generator,
                child_map,
                _held_out(training.a_half, seed, data),
                network_of,
            )
        else:
            row = tuple(controller.greedy_indices().tolist())
        arch = arch_of(row)
        cell = architecture_cell(arch)
        _, val = score_candidate(
            model, arch, data, DERIVED_BN_IMAGES, seed, runtime, per_class=False
        )
        metrics = {
            **prob_metrics(keys, choices, frequencies),
            "search_train_loss": train_loss,
            # search_mean_child_map_50: the rewards' mAP@0.5, on minibatches of the other half
            **phase.metrics(score_name(settings, "map_50")),
            "search_derived_val_map_50": val["map_50"],
            "search_derived_val_map": val["map"],
            "search_seconds": time.perf_counter() - start,
        }
        if log_epoch is not None:
            log_epoch(epoch, metrics)
    return SpineNetSearchResult(cell, probs, metrics)


def _held_out(a_half: Any, seed: int, data: DetectionData) -> tuple[torch.Tensor, list]:
    """One fixed batch of :data:`DERIVE_IMAGES` images of the reward half."""
    return next(iter(loader(a_half, DERIVE_IMAGES, seed + 2, data)))
