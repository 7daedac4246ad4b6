"""Bilevel gradient-based search over the NB201 cell: DARTS, GDAS and ProxylessNAS.

All three alternate, on every step, an architecture step on one half of the training split and
a weight step on the other half (the validation split is kept for scoring), with architecture
parameters ``alpha`` (6 edges x 5 operations) outside the supernet:

- ``darts`` (Liu et al. 2019): the continuous mixture ``softmax(alpha)`` on every edge. First
  order: the architecture gradient at the current weights. Second order: at the weights after
  one virtual step of the weight optimiser (SGD with its momentum buffer and weight decay, as
  the DARTS reference code), with the Hessian-vector product by finite differences (DARTS eq.
  7-8).
- ``gdas`` (Dong & Yang 2019): one operation per edge sampled by Gumbel-max, the gradient of
  the tempered Gumbel-softmax (temperature annealed linearly from ``tau_max`` to ``tau_min``);
  only the sampled operation is computed. With ``latency_weight > 0`` the architecture loss is
  FBNet's ``CE * latency_weight * log(LAT)^latency_beta`` (LAT in microseconds, from the CPU
  look-up table, under the sampled weights).
- ``proxyless`` (Cai et al. 2019): binarised paths. The weight step samples one operation per
  edge from ``softmax(alpha)`` and trains that path only; the architecture step is the paper's
  two-path scheme (:func:`~nas_plugin.supernets.nb201.two_path_gates`): two operations per edge
  sampled, one of them active, only those two computed, BinaryConnect's gradient to their two
  ``alpha`` through the pair's softmax, then the pair rescaled so the unsampled operations keep
  their probabilities. Loss ``CE + latency_weight * E[LAT] / LAT(uniform cell)``, ``E[LAT]``
  under the full ``softmax(alpha)`` (differentiable in every ``alpha``, as in the paper).

The derived cell is the argmax of ``alpha`` on every edge.

Every search runs on one :class:`~nas_plugin.hardware.device.Runtime` (``train.device``,
``train.precision``, ``train.channels_last`` of the app): the supernet, ``alpha``, the batches
and the latency costs are on its device; weight steps and first-order architecture steps run
their forwards under its autocast, with a gradient scaler for fp16 (one per optimiser). The
second-order DARTS step stays in fp32: its finite differences perturb the weights by
``0.01 / |grad|``, far below bf16's resolution. Random draws (Gumbel noise, sampled paths) come
from a CPU generator, so a seed derives the same cells on any device. ``train.compile`` is not
used: the supernet's graph changes with every sampled path.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas_plugin.hardware.device import Runtime
from nas_plugin.oneshot.bilevel import (  # noqa: F401 (virtual_step: re-exported)
    BilevelTraining,
    epoch_loss,
    temperature,
    unrolled_step,
    virtual_step,
)
from nas_plugin.oneshot.latency import expected_latency, load_lut, measure_lut, op_costs
from nas_plugin.oneshot.settings import (  # noqa: F401 (re-exported: callers import them here)
    DERIVED_BN_IMAGES,
    METHODS,
    SearchResult,
    SearchSettings,
)
from nas_plugin.oneshot.spos import ScoringBatches, evaluate_path
from nas_plugin.space.nb201 import EDGE_KEYS, EDGES, OPS, to_arch_str
from nas_plugin.supernets.nb201 import (
    NB201Supernet,
    binary_gates,
    derive,
    gumbel_hard,
    rescale_pairs,
    two_path_gates,
)
from nas_plugin.tasks.training import optimizer_step
from nas_plugin.tasks.vision_data import VisionData


def alpha_metrics(alpha: torch.Tensor) -> dict[str, float]:
    """``alpha.<edge>.<op>``: the edge's softmax weight of each operation."""
    probs = F.softmax(alpha.detach(), dim=-1).cpu()  # one copy, not one wait per entry
    return {
        f"alpha.{key}.{op}": float(probs[e, k])
        for e, key in enumerate(EDGE_KEYS)
        for k, op in enumerate(OPS)
    }


def search(
    settings: SearchSettings,
    data: VisionData,
    preprocess: nn.Module,
    channels: int,
    cells_per_stage: int,
    resolution: int,
    seed: int,
    log_epoch: Callable[[int, dict[str, float]], None] | None = None,
    *,
    runtime: Runtime | None = None,
) -> SearchResult:
    """Run one bilevel search on ``runtime`` (default: the CPU, fp32); ``log_epoch(epoch,
    metrics)`` after every epoch (1-based).

    Raises:
        FloatingPointError: the search's weight loss became NaN or infinite.
    """
    if settings.method not in METHODS:
        raise ValueError(f"method {settings.method!r} is unknown; allowed: {list(METHODS)}")
    if settings.method == "enas":  # an RL controller, not a bilevel relaxation
        from nas_plugin.oneshot.enas import search_enas

        return search_enas(
            settings,
            data,
            preprocess,
            channels,
            cells_per_stage,
            resolution,
            seed,
            log_epoch,
            runtime=runtime,
        )
    runtime = runtime or Runtime.cpu()
    device = runtime.device
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = runtime.prepare(NB201Supernet(channels, cells_per_stage, data.num_classes, data.in_chans))
    alpha = nn.Parameter((1e-3 * torch.randn(len(EDGES), len(OPS), generator=generator)).to(device))
    # A copy on the device: the caller's module is shared (cached per process).
    preprocess = copy.deepcopy(preprocess).to(device)
    parts = BilevelTraining.of(net, [alpha], data, settings, seed, runtime)
    w_opt, a_opt, w_scaler, a_scaler = parts.w_opt, parts.a_opt, parts.w_scaler, parts.a_scaler
    scoring = ScoringBatches.of(data, DERIVED_BN_IMAGES, seed)

    lut, costs, reference = None, None, 1.0
    if settings.method in ("gdas", "proxyless") and settings.latency_weight > 0:
        lut = (
            load_lut(settings.latency_table)
            if settings.latency_table
            else measure_lut(channels, resolution)
        )
        costs = op_costs(lut, cells_per_stage)
        reference = float(expected_latency(torch.full((len(EDGES), len(OPS)), 0.2), costs))
        costs = costs.to(device)

    def arch_loss(
        logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        loss = F.cross_entropy(logits, labels)
        if costs is None:
            return loss
        if settings.method == "gdas":  # FBNet: multiplicative, log-latency (LAT in us > 1)
            latency = expected_latency(weights, costs)  # under the Gumbel sample, as FBNet
            return loss * settings.latency_weight * torch.log(latency) ** settings.latency_beta
        # ProxylessNAS: E[LAT] under softmax(alpha), a gradient for every operation's alpha.
        latency = expected_latency(F.softmax(alpha, dim=-1), costs)
        return loss + settings.latency_weight * latency / reference

    alphas: list[list[list[float]]] = []
    metrics: dict[str, float] = {}
    start = time.perf_counter()
    step = 0
    for epoch in range(1, settings.epochs + 1):
        tau = temperature(settings, epoch)
        net.train()
        # Summed on the device in float64 (as Python floats would be): no wait per step.
        w_total = torch.zeros((), dtype=torch.float64, device=device)
        a_total = torch.zeros_like(w_total)
        seen = 0
        for (xw, yw), (xa, ya) in zip(parts.w_batches, parts.a_batches, strict=False):
            xw, xa = preprocess(runtime.to_device(xw)), preprocess(runtime.to_device(xa))
            yw, ya = runtime.to_device(yw), runtime.to_device(ya)
            # -- architecture step (on the other half), after the warm-up --
            pairs, a_value = None, None
            if epoch > settings.warmup_epochs:
                a_opt.zero_grad(set_to_none=True)
                if settings.method == "darts" and settings.order == 2:
                    step_value = unrolled_step(
                        net,
                        [alpha],
                        lambda: {"weights": F.softmax(alpha, dim=-1)},
                        xw,
                        yw,
                        xa,
                        ya,
                        w_opt,
                    )
                    a_value = torch.tensor(step_value, dtype=torch.float64)
                    a_opt.step()  # alpha.grad is an fp32, unscaled gradient
                else:
                    if settings.method == "proxyless":  # two paths per edge, the paper's scheme
                        weights, compute, pairs = two_path_gates(alpha, generator)
                        before = alpha.detach().clone()
                        with runtime.autocast():
                            logits = net(xa, weights=weights, compute=compute)
                    else:
                        weights, active = _relax(settings.method, alpha, tau, generator)
                        with runtime.autocast():
                            logits = net(xa, weights=weights, active_only=active)
                    loss = arch_loss(logits.float(), ya, weights)
                    a_scaler.scale(loss).backward()
                    a_value = loss.detach()
                    a_scaler.step(a_opt)
                    a_scaler.update()
                if pairs is not None:
                    rescale_pairs(alpha.data, before, pairs)
            # -- weight step --
            with torch.no_grad():
                weights, active = _relax(settings.method, alpha, tau, generator)
            with runtime.autocast():
                logits = net(xw, weights=weights, active_only=active)
            loss = F.cross_entropy(logits.float(), yw)
            optimizer_step(loss, w_opt, w_scaler, parts.schedule, settings.grad_clip)
            step += 1
            w_total += loss.detach().double() * len(yw)
            if a_value is not None:
                a_total += a_value.to(device, torch.float64) * len(ya)
            seen += len(yw)
        train_loss = epoch_loss(w_total, seen, epoch)
        ops = derive(alpha.detach())
        _, scored = evaluate_path(
            net,
            preprocess,
            data,
            ops,
            seed,
            bn_images=DERIVED_BN_IMAGES,
            runtime=runtime,
            batches=scoring,
        )
        probs = F.softmax(alpha.detach(), dim=-1).cpu()
        alphas.append(probs.tolist())
        metrics = {
            **alpha_metrics(alpha),
            "search_train_loss": train_loss,
            "search_derived_val_accuracy": scored["val_accuracy"],
            "search_skip_edges": float(sum(op == "skip_connect" for op in ops)),
            "search_seconds": time.perf_counter() - start,
        }
        if epoch > settings.warmup_epochs:  # no architecture step in a warm-up epoch
            metrics["search_arch_loss"] = a_total.item() / max(1, seen)
        if settings.method == "gdas":
            metrics["search_tau"] = tau
        if costs is not None:
            metrics["search_expected_latency_us"] = float(expected_latency(probs, costs.cpu()))
        if log_epoch is not None:
            log_epoch(epoch, metrics)
    ops = derive(alpha.detach())
    return SearchResult(ops, to_arch_str(ops), alphas, metrics, lut)


def _relax(
    method: str, alpha: torch.Tensor, tau: float, generator: torch.Generator
) -> tuple[torch.Tensor, bool]:
    """(edge weights, compute only non-zero ones) of one step (ProxylessNAS: its weight step's
    single sampled path)."""
    if method == "darts":
        return F.softmax(alpha, dim=-1), False
    if method == "gdas":
        return gumbel_hard(alpha, tau, generator), True
    return binary_gates(alpha, generator), True
