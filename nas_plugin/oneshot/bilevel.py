"""What the bilevel one-shot searches share (DARTS/GDAS/ProxylessNAS on NB201 in
:mod:`~nas_plugin.oneshot.search`, DARTS/GDAS on Auto-DeepLab in
:mod:`~nas_plugin.oneshot.autodeeplab_search`; ENAS takes the loss check): the two optimisers,
the two halves of the training split, the weight schedule, GDAS's temperature, and the check of
an epoch's mean weight loss."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from nas_plugin.hardware.device import Runtime
from nas_plugin.oneshot.data import halves, loader
from nas_plugin.oneshot.settings import SearchSettings


@dataclass
class BilevelTraining:
    """Weights learn on ``w_batches`` (SGD with momentum, cosine ``schedule`` over the epochs'
    steps to 1e-3 of the lr), the architecture on ``a_batches`` (Adam, betas 0.5 / 0.999, as
    DARTS); one gradient scaler each (active for fp16 only)."""

    w_opt: torch.optim.SGD
    a_opt: torch.optim.Adam
    w_batches: DataLoader
    a_batches: DataLoader
    schedule: torch.optim.lr_scheduler.CosineAnnealingLR
    w_scaler: torch.amp.GradScaler
    a_scaler: torch.amp.GradScaler

    @classmethod
    def of(
        cls,
        net: nn.Module,
        arch_params: Sequence[nn.Parameter],
        data: Any,
        settings: SearchSettings,
        seed: int,
        runtime: Runtime,
    ) -> BilevelTraining:
        """The optimisers of ``net`` and ``arch_params``, and both halves of ``data``'s
        augmented training split (DARTS's train transform; built once, so their workers persist
        across epochs)."""
        w_opt = torch.optim.SGD(
            net.parameters(),
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
        )
        a_opt = torch.optim.Adam(
            list(arch_params),
            lr=settings.arch_lr,
            betas=(0.5, 0.999),
            weight_decay=settings.arch_weight_decay,
        )
        w_half, a_half = halves(data.augmented_train, seed)
        w_batches = loader(w_half, settings.batch_size, seed, data)
        a_batches = loader(a_half, settings.batch_size, seed + 1, data)
        steps = settings.epochs * min(len(w_batches), len(a_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            w_opt, steps, eta_min=1e-3 * settings.lr
        )
        return cls(
            w_opt,
            a_opt,
            w_batches,
            a_batches,
            schedule,
            runtime.grad_scaler(),
            runtime.grad_scaler(),
        )


def temperature(settings: SearchSettings, epoch: int) -> float:
    """GDAS's Gumbel-softmax temperature at ``epoch`` (1-based): linear from ``tau_max`` at the
    first epoch to ``tau_min`` at the last."""
    return settings.tau_max - (settings.tau_max - settings.tau_min) * (
        (epoch - 1) / max(1, settings.epochs - 1)
    )


def epoch_loss(total: torch.Tensor, seen: int, epoch: int) -> float:
    """The epoch's mean weight loss (``total`` summed over ``seen`` examples); a
    FloatingPointError if it is NaN or infinite."""
    loss = total.item() / max(1, seen)
    if not math.isfinite(loss):
        raise FloatingPointError(f"search loss is {loss} at epoch {epoch}: lower the strategy's lr")
    return loss
