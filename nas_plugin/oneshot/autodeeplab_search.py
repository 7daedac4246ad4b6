"""Search of the Auto-DeepLab supernet (:mod:`nas_plugin.supernets.autodeeplab`) on a
segmentation task: DARTS (first or second order), GDAS and ProxylessNAS here, the shape of
:mod:`nas_plugin.oneshot.search`; ENAS in :mod:`nas_plugin.oneshot.autodeeplab_enas`.

Every step takes an architecture step (``alpha``: 6 x 5 cell weights, ``beta``: layers x 4 x 3
move weights; Adam) on one half of the training split, then a weight step (SGD with momentum,
cosine schedule, gradient clipping) on the other; the loss is the per-pixel cross-entropy with
the task's ``ignore_index``.

- ``darts``: the continuous relaxation, ``softmax(alpha)`` on every edge and the move
  probabilities (:func:`~nas_plugin.supernets.autodeeplab.move_probs`) on every trellis move:
  every node of the trellis is computed. Second order (``order=2``): the architecture gradient
  of ``alpha`` and ``beta`` at the weights after one virtual weight step, the Hessian-vector
  product by finite differences, in fp32 (:func:`~nas_plugin.oneshot.bilevel.unrolled_step`, as
  the NB201 search).
- ``gdas``: one operation per edge (Gumbel-max over ``alpha``) and one path (a Gumbel-max move
  per layer from the current level, :func:`~nas_plugin.supernets.autodeeplab.gumbel_path`),
  straight-through gradients, temperature annealed linearly from ``tau_max`` to ``tau_min``;
  only the sampled path's cells and operations are computed.
- ``proxyless``: binarised paths. The weight step samples one operation per edge from
  ``softmax(alpha)`` and one path, a move per layer from the current level's move probabilities
  (:func:`~nas_plugin.supernets.autodeeplab.sampled_path`), and trains only those. The
  architecture step takes the paper's two-path scheme on the cell (two operations per edge, one
  active, both computed, BinaryConnect's gradient through the pair's softmax, the pair rescaled
  afterwards: :func:`~nas_plugin.supernets.nb201.two_path_gates`, as the NB201 search) and one
  sampled path with BinaryConnect's straight-through gate on ``beta``: the moves from a level
  lead to different nodes, so a second path would need its own forward through the rest of the
  trellis. No latency term here (the look-up table is the NB201 network's).

After every epoch the derived architecture (argmax of ``alpha``, Viterbi path through ``beta``)
is scored on the val split as a sub-network of the supernet (its inherited weights, BatchNorm
statistics re-estimated on training images, no decoder skip: the supernet has none); DARTS's
whole relaxed supernet is scored too (``search_supernet_val_miou``).

On one :class:`~nas_plugin.hardware.device.Runtime` (device, autocast, gradient scalers);
random draws come from a CPU generator, so a seed gives the same search on any device.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas_plugin.hardware.device import Runtime
from nas_plugin.models.autodeeplab import path_levels
from nas_plugin.oneshot.autodeeplab_parts import (  # noqa: F401 (callers import them here)
    DERIVED_BN_IMAGES,
    EVAL_BATCH_SIZE,
    AutoDeepLabArch,
    AutoDeepLabSearchResult,
    beta_metrics,
    score_subnetwork,
)
from nas_plugin.oneshot.bilevel import BilevelTraining, epoch_loss, temperature, unrolled_step
from nas_plugin.oneshot.search import alpha_metrics
from nas_plugin.oneshot.settings import SearchSettings
from nas_plugin.space.autodeeplab import MOVES
from nas_plugin.space.nb201 import EDGES, OPS
from nas_plugin.supernets.autodeeplab import (
    AutoDeepLabSupernet,
    gumbel_path,
    move_probs,
    sampled_path,
    viterbi_path,
)
from nas_plugin.supernets.nb201 import (
    binary_gates,
    derive,
    gumbel_hard,
    rescale_pairs,
    two_path_gates,
)
from nas_plugin.tasks.segmentation import evaluate, recalibration_loader
from nas_plugin.tasks.segmentation_data import SegmentationData
from nas_plugin.tasks.training import optimizer_step

METHODS = ("darts", "gdas", "proxyless", "enas")  # enas: oneshot/autodeeplab_enas.py


class _Relaxed(nn.Module):
    """Raw images -> preprocess -> the whole supernet under DARTS's relaxation (for scoring)."""

    def __init__(
        self,
        preprocess: nn.Module,
        net: AutoDeepLabSupernet,
        alpha: torch.Tensor,
        beta: torch.Tensor,
    ) -> None:
        super().__init__()
        self.preprocess, self.net = preprocess, net
        self.cell, self.moves = F.softmax(alpha.detach(), dim=-1), move_probs(beta.detach())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images), self.cell, self.moves)


def search_autodeeplab(
    settings: SearchSettings,
    data: SegmentationData,
    preprocess: nn.Module,
    arch: AutoDeepLabArch,
    seed: int,
    log_epoch: Callable[[int, dict[str, float]], None] | None = None,
    *,
    runtime: Runtime | None = None,
) -> AutoDeepLabSearchResult:
    """One bilevel search on ``runtime`` (default: the CPU, fp32); ``log_epoch(epoch,
    metrics)`` after every epoch (1-based).

    Raises:
        ValueError: a method other than darts (order 1 or 2), gdas, proxyless, enas (order 1);
            a latency term.
        FloatingPointError: the weight loss became NaN or infinite.
    """
    second_order = settings.method == "darts" and settings.order == 2
    if settings.method not in METHODS or (settings.order != 1 and not second_order):
        raise ValueError(
            f"method {settings.method!r} (order {settings.order}) does not search the "
            f"Auto-DeepLab supernet: allowed {list(METHODS)}, first order (darts: 1 or 2)"
        )
    if settings.latency_weight != 0:
        raise ValueError(
            f"latency_weight={settings.latency_weight!r}: the Auto-DeepLab search has no latency "
            "term (the look-up table is the NB201 network's); expected 0"
        )
    if settings.method == "enas":  # an RL controller, not a bilevel relaxation
        from nas_plugin.oneshot.autodeeplab_enas import search_autodeeplab_enas

        return search_autodeeplab_enas(
            settings, data, preprocess, arch, seed, log_epoch, runtime=runtime
        )
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
    alpha = nn.Parameter((1e-3 * torch.randn(len(EDGES), len(OPS), generator=generator)).to(device))
    beta = nn.Parameter(
        (1e-3 * torch.randn(arch.layers, 4, len(MOVES), generator=generator)).to(device)
    )
    preprocess = copy.deepcopy(preprocess).to(device)  # the caller's may be shared
    parts = BilevelTraining.of(net, [alpha, beta], data, settings, seed, runtime)
    w_opt, a_opt, w_scaler, a_scaler = parts.w_opt, parts.a_opt, parts.w_scaler, parts.a_scaler
    if min(len(parts.w_batches), len(parts.a_batches)) == 0:
        raise ValueError(
            f"the training split has {len(data.train)} image(s): too few for two halves of "
            f"batch_size={settings.batch_size}"
        )
    recalibration = recalibration_loader(data, DERIVED_BN_IMAGES, seed)
    val_batches = data.loader(data.val, EVAL_BATCH_SIZE)
    ignore = data.ignore_index

    def relax(tau: float) -> tuple[torch.Tensor, torch.Tensor, bool]:
        if settings.method == "darts":
            return F.softmax(alpha, dim=-1), move_probs(beta), False
        if settings.method == "proxyless":  # its weight step's single sampled path
            return binary_gates(alpha, generator), sampled_path(beta, generator)[0], True
        cell = gumbel_hard(alpha, tau, generator)
        moves, _ = gumbel_path(beta, tau, generator)
        return cell, moves, True

    alphas: list[list[list[float]]] = []
    betas: list[list[list[list[float]]]] = []
    metrics: dict[str, float] = {}
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        tau = temperature(settings, epoch)
        net.train()
        w_total = torch.zeros((), dtype=torch.float64, device=device)
        a_total = torch.zeros_like(w_total)
        seen = 0
        for (xw, yw), (xa, ya) in zip(parts.w_batches, parts.a_batches, strict=False):
            xw, xa = preprocess(runtime.to_device(xw)), preprocess(runtime.to_device(xa))
            yw, ya = runtime.to_device(yw), runtime.to_device(ya)
            # -- architecture step (alpha and beta, on the other half), after the warm-up --
            if epoch > settings.warmup_epochs and second_order:
                # alpha.grad and beta.grad: fp32, unscaled
                a_opt.zero_grad(set_to_none=True)
                a_total += len(ya) * unrolled_step(
                    net,
                    [alpha, beta],
                    lambda: {
                        "cell_weights": F.softmax(alpha, dim=-1),
                        "move_weights": move_probs(beta),
                    },
                    xw,
                    yw,
                    xa,
                    ya,
                    parts.w_opt,
                    lambda logits, labels: F.cross_entropy(logits, labels, ignore_index=ignore),
                )
                a_opt.step()
            elif epoch > settings.warmup_epochs:
                a_opt.zero_grad(set_to_none=True)
                compute, pairs = None, None
                if settings.method == "proxyless":  # two paths per edge, one sampled path
                    cell, compute, pairs = two_path_gates(alpha, generator)
                    moves, _ = sampled_path(beta, generator)
                    before, active = alpha.detach().clone(), True
                else:
                    cell, moves, active = relax(tau)
                with runtime.autocast():
                    logits = net(xa, cell, moves, active_only=active, cell_compute=compute)
                loss = F.cross_entropy(logits.float(), ya, ignore_index=ignore)
                a_scaler.scale(loss).backward()
                a_scaler.step(a_opt)
                a_scaler.update()
                if pairs is not None:  # the unsampled operations keep their probabilities
                    rescale_pairs(alpha.data, before, pairs)
                a_total += loss.detach().double() * len(ya)
            # -- weight step --
            with torch.no_grad():
                cell, moves, active = relax(tau)
            with runtime.autocast():
                logits = net(xw, cell, moves, active_only=active)
            loss = F.cross_entropy(logits.float(), yw, ignore_index=ignore)
            optimizer_step(loss, w_opt, w_scaler, parts.schedule, settings.grad_clip)
            w_total += loss.detach().double() * len(yw)
            seen += len(yw)
        train_loss = epoch_loss(w_total, seen, epoch)
        ops, path = derive(alpha.detach()), viterbi_path(move_probs(beta.detach()))
        scores = score_subnetwork(
            net, preprocess, ops, path, recalibration, val_batches, data, runtime
        )
        probs = move_probs(beta.detach()).cpu()
        alphas.append(F.softmax(alpha.detach(), dim=-1).cpu().tolist())
        betas.append(probs.tolist())
        levels = path_levels(path)
        metrics = {
            **alpha_metrics(alpha),
            **beta_metrics(probs),
            **{f"search_path.layer_{k}": float(2 ** (lv + 2)) for k, lv in enumerate(levels, 1)},
            "search_train_loss": train_loss,
            "search_derived_val_miou": scores["miou"],
            "search_derived_val_pixel_accuracy": scores["pixel_accuracy"],
            "search_skip_edges": float(sum(op == "skip_connect" for op in ops)),
            "search_seconds": time.perf_counter() - start,
        }
        if epoch > settings.warmup_epochs:  # no architecture step in a warm-up epoch
            metrics["search_arch_loss"] = a_total.item() / max(1, seen)
        if settings.method == "gdas":
            metrics["search_tau"] = tau
        elif settings.method == "darts":
            # The supernet as it trains: every path mixed (its own BatchNorm statistics).
            relaxed = evaluate(
                _Relaxed(preprocess, net, alpha, beta), val_batches, data, runtime=runtime
            )
            net.train()
            metrics["search_supernet_val_miou"] = relaxed["miou"]
        if log_epoch is not None:
            log_epoch(epoch, metrics)
    ops, path = derive(alpha.detach()), viterbi_path(move_probs(beta.detach()))
    return AutoDeepLabSearchResult(ops, path, alphas, betas, metrics)
