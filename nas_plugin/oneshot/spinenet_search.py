"""Gradient-based search of the SpineNet detection supernet (:mod:`nas_plugin.supernets.spinenet`):
``darts`` (first or second order), ``gdas`` and ``proxyless`` on ``search_space=spinenet``, the
shape of :mod:`nas_plugin.oneshot.autodeeplab_search`.

Every searched key (``model.blocks.block_<k>.{level,type,input_1,input_2}``,
``model.pyramid.fusion``) gets a vector of architecture logits, one per value of the sweep's
space. ``gdas`` and ``proxyless`` draw **one architecture** from them every step, gate its path
(each gate is 1 in value, with a straight-through gradient to the key's logits: a block's output
by its level and type gates, each resampled input by its input gate, the pyramid by the fusion
gate) and compute only that path:

- ``gdas``: a Gumbel-max draw per key, the gradient of the tempered Gumbel-softmax, the
  temperature annealed linearly from ``tau_max`` to ``tau_min`` (Dong & Yang, 2019);
- ``proxyless``: a draw from ``softmax(logits)`` per key, BinaryConnect's gradient through the
  softmax (Cai et al., 2019).

There a key's gradient comes from its sampled value only: its alternatives would be other blocks
or levels, a forward of their own each (a level changes every tensor after it). ``darts``
computes them all: the expected network under ``softmax(logits)``
(:class:`~nas_plugin.oneshot.spinenet_darts.Relaxation`), a gradient to every value of every
key, at about five times a single path's cost per step. Second order (``order=2``): the
logits' gradient at the weights after one virtual weight step, the Hessian-vector product by
finite differences, in fp32 (:func:`~nas_plugin.oneshot.bilevel.unrolled_gradients`): four
relaxed passes per architecture step instead of one.

The architecture step (Adam on the logits, after ``warmup_epochs``) takes FCOS's loss on one
half of the training split, the weight step (SGD with momentum, cosine schedule, gradient
clipping) on the other. After every epoch the derived architecture (argmax per key) is
extracted with the supernet's weights, its BatchNorm statistics re-estimated, and scored on val
(``search_derived_val_map_50``, ``search_derived_val_map``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from nas_plugin.hardware.device import Runtime
from nas_plugin.models.spinenet import architecture_cell, check_model_config
from nas_plugin.oneshot.bilevel import (
    BilevelTraining,
    epoch_loss,
    temperature,
    unrolled_gradients,
)
from nas_plugin.oneshot.settings import SearchSettings
from nas_plugin.oneshot.spinenet_darts import Relaxation, fixed_weights
from nas_plugin.supernets.nb201 import binary_gates, gumbel_hard
from nas_plugin.supernets.spinenet import (
    SpineNetSupernet,
    build_supernet,
    score_candidate,
    with_values,
)
from nas_plugin.tasks.detection import DetectionModel, channel_stats, shift_labels
from nas_plugin.tasks.detection_data import DetectionData
from nas_plugin.tasks.training import optimizer_step

METHODS = ("darts", "gdas", "proxyless")
# Training images the derived detector's BatchNorm statistics are re-estimated on, every epoch.
DERIVED_BN_IMAGES = 256


@dataclass
class SpineNetSearchResult:
    cell: dict[str, Any]  # the derived architecture: every block's fields, pyramid.fusion
    probs: list[dict[str, list[float]]]  # per epoch: softmax(logits) of every searched key
    metrics: dict[str, float]


def prob_metrics(
    keys: Sequence[str], choices: Mapping[str, Sequence[Any]], probs: Sequence[Sequence[float]]
) -> dict[str, float]:
    """``prob.<key without model.>.<value>``: each searched value's probability (``probs``: per
    key of ``keys``, one per value of ``choices[key]``)."""
    return {
        f"prob.{key.removeprefix('model.')}.{value}": float(p)
        for key, row in zip(keys, probs, strict=True)
        for value, p in zip(choices[key], row, strict=True)
    }


def searched_supernet(
    settings: SearchSettings,
    data: DetectionData,
    base: Mapping[str, Any],
    resolution: int,
    runtime: Runtime,
) -> DetectionModel:
    """The task's FCOS detector on a SpineNet supernet of the app's sizes (``base``), on
    ``runtime``'s device: what every search of this space trains.

    Raises:
        ValueError: a latency term (this space has no latency table)."""
    if settings.latency_weight != 0:
        raise ValueError(
            f"latency_weight={settings.latency_weight!r}: the SpineNet search has no latency "
            "term; expected 0"
        )
    mean, std = channel_stats(data)
    supernet = build_supernet(base, data.num_classes, data.in_chans)
    return runtime.prepare(DetectionModel(supernet, resolution, mean, std))


def detection_loss(
    model: DetectionModel, images: torch.Tensor, targets: list, runtime: Runtime
) -> torch.Tensor:
    """FCOS's summed training losses of a batch on ``runtime`` (train mode)."""
    images = runtime.to_device(images)
    targets = [{k: runtime.to_device(v) for k, v in t.items()} for t in targets]
    with runtime.autocast():
        return sum(model.detector(list(images), shift_labels(targets)).values())


def search_spinenet(
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
    """One search over ``choices`` (the sweep's space: searched key -> its values; the other
    keys as the app's model config ``base`` has them) on ``runtime`` (default: the CPU, fp32);
    ``log_epoch(epoch, metrics)`` after every epoch (1-based).

    Raises:
        ValueError: a method other than darts (order 1 or 2), gdas or proxyless (order 1); a
            latency term; too few images.
        FloatingPointError: the weight loss became NaN or infinite.
    """
    if settings.method not in METHODS:
        raise ValueError(
            f"method {settings.method!r} does not search the SpineNet supernet by gradient: "
            f"allowed {list(METHODS)} (enas: nas_plugin/oneshot/spinenet_enas.py)"
        )
    second_order = settings.method == "darts" and settings.order == 2
    if settings.order != 1 and not second_order:
        raise ValueError(
            f"order={settings.order!r}: {settings.method} on the SpineNet supernet is first "
            "order (darts: 1 or 2)"
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
    parts = BilevelTraining.of(model, logits, data, settings, seed, runtime)
    if min(len(parts.w_batches), len(parts.a_batches)) == 0:
        raise ValueError(
            f"the training split has {len(data.train)} image(s): too few for two halves of "
            f"batch_size={settings.batch_size}"
        )

    def draw(tau: float) -> dict[str, torch.Tensor]:
        if settings.method == "gdas":
            return {k: gumbel_hard(v, tau, generator) for k, v in zip(keys, logits, strict=True)}
        return {k: binary_gates(v, generator) for k, v in zip(keys, logits, strict=True)}

    def use(gates: Mapping[str, torch.Tensor]) -> None:
        """Set the drawn architecture and its gates (each the one-hot's sampled entry)."""
        picked = {k: int(g.detach().argmax()) for k, g in gates.items()}
        args = check_model_config(with_values(base, {k: choices[k][i] for k, i in picked.items()}))
        backbone.set_arch(args["blocks"], args["fusion"])
        backbone.gates = {k: g[picked[k]] for k, g in gates.items()}

    unsearched = fixed_weights(base, choices, device)

    def relax(detach: bool) -> None:
        """DARTS: the expected network under softmax(logits) (held, without a gradient)."""
        weights = {
            k: (list(choices[k]), F.softmax(v.detach() if detach else v, dim=-1))
            for k, v in zip(keys, logits, strict=True)
        }
        backbone.relaxation = Relaxation({**unsearched, **weights})

    def architecture_step(tau: float) -> None:
        relax(detach=False) if settings.method == "darts" else use(draw(tau))

    def weight_step(tau: float) -> None:
        if settings.method == "darts":
            relax(detach=True)
            return
        with torch.no_grad():  # a drawn path, its gates held at 1
            gates = {k: g.detach() for k, g in draw(tau).items()}
        use(gates)

    detector = model.detector  # every parameter of the model is the detector's
    names = [n for n, _ in detector.named_parameters()]
    params = [p for _, p in detector.named_parameters()]
    buffers = dict(detector.named_buffers())

    def loss_at(
        images: torch.Tensor, targets: list
    ) -> Callable[[list[torch.Tensor]], torch.Tensor]:
        """FCOS's loss of the batch with the detector's weights replaced, the relaxation built
        afresh from the logits (each call's graph is freed by its gradient)."""
        images = list(runtime.to_device(images))
        targets = shift_labels([{k: runtime.to_device(v) for k, v in t.items()} for t in targets])

        def loss(weights: list[torch.Tensor]) -> torch.Tensor:
            relax(detach=False)
            state = {**dict(zip(names, weights, strict=True)), **buffers}
            return sum(functional_call(detector, state, (images, targets)).values())

        return loss

    def discrete() -> None:
        backbone.gates, backbone.relaxation = {}, None

    probs: list[dict[str, list[float]]] = []
    metrics: dict[str, float] = {}
    cell: dict[str, Any] = {}
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        tau = temperature(settings, epoch)
        w_total = torch.zeros((), dtype=torch.float64, device=device)
        a_total = torch.zeros_like(w_total)
        seen = 0
        for (xw, yw), (xa, ya) in zip(parts.w_batches, parts.a_batches, strict=False):
            model.train()
            if epoch > settings.warmup_epochs and second_order:  # logits' grad: fp32, unscaled
                parts.a_opt.zero_grad(set_to_none=True)
                a_total += len(ya) * unrolled_gradients(
                    params, logits, loss_at(xw, yw), loss_at(xa, ya), parts.w_opt
                )
                parts.a_opt.step()
            elif epoch > settings.warmup_epochs:  # -- architecture step, on the other half --
                parts.a_opt.zero_grad(set_to_none=True)
                architecture_step(tau)
                loss = detection_loss(model, xa, ya, runtime)
                parts.a_scaler.scale(loss).backward()
                parts.a_scaler.step(parts.a_opt)
                parts.a_scaler.update()
                a_total += loss.detach().double() * len(ya)
            weight_step(tau)  # -- weight step, the architecture held --
            loss = detection_loss(model, xw, yw, runtime)
            optimizer_step(loss, parts.w_opt, parts.w_scaler, parts.schedule, settings.grad_clip)
            w_total += loss.detach().double() * len(yw)
            seen += len(yw)
        discrete()
        train_loss = epoch_loss(w_total, seen, epoch)
        best = {k: choices[k][int(v.detach().argmax())] for k, v in zip(keys, logits, strict=True)}
        arch = with_values(base, best)
        cell = architecture_cell(arch)
        _, val = score_candidate(
            model, arch, data, DERIVED_BN_IMAGES, seed, runtime, per_class=False
        )
        discrete()
        softmax = [F.softmax(v.detach(), -1).cpu().tolist() for v in logits]
        probs.append(dict(zip(keys, softmax, strict=True)))
        metrics = {
            **prob_metrics(keys, choices, softmax),
            "search_train_loss": train_loss,
            "search_derived_val_map_50": val["map_50"],
            "search_derived_val_map": val["map"],
            "search_seconds": time.perf_counter() - start,
        }
        if epoch > settings.warmup_epochs:
            metrics["search_arch_loss"] = a_total.item() / max(1, seen)
        if settings.method == "gdas":
            metrics["search_tau"] = tau
        if log_epoch is not None:
            log_epoch(epoch, metrics)
    return SpineNetSearchResult(cell, probs, metrics)
