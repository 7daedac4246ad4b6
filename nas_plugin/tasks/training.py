"""What every task's training starts from: seeded random generators, the checked training
budget, the runtime (device, precision), the untrained model's cost, and the optimizer chosen
by ``train.optimizer``."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from nas_plugin.hardware.cost import measure_configured_cost
from nas_plugin.hardware.device import Runtime
from nas_plugin.tasks.reporting import current_reporter

OPTIMIZERS = ("adamw", "sgd")


def set_threads(train_cfg: Mapping[str, Any] | None) -> None:
    """Use ``train.num_threads`` torch threads (default 1: trials run side by side, one core
    each)."""
    torch.set_num_threads(int((train_cfg or {}).get("num_threads", 1)))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (same seed, same trial)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, train_cfg: DictConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with Nesterov momentum, at ``train.lr`` and ``train.weight_decay``."""
    name = train_cfg.get("optimizer", "adamw")
    lr, weight_decay = float(train_cfg.lr), float(train_cfg.get("weight_decay", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
        )
    raise ValueError(
        f"train.optimizer = {name!r} is not allowed: expected one of {', '.join(OPTIMIZERS)}"
    )


def start_trial(cfg: DictConfig) -> tuple[int, int, Runtime]:
    """Seed every generator with ``cfg.seed``, check ``train.epochs``, ``train.batch_size`` and
    ``train.lr``, set the threads and resolve the runtime (a device this machine lacks fails
    here), tagged on the current reporter. Returns (seed, epochs, runtime)."""
    seed = int(cfg.seed)
    seed_everything(seed)
    train_cfg = cfg.train
    epochs = check_budget(train_cfg)
    set_threads(train_cfg)
    runtime = Runtime.from_config(train_cfg)
    current_reporter().set_tags(runtime.describe())
    return seed, epochs, runtime


def model_cost(
    model: nn.Module, input_shape: tuple[int, ...], hardware: Mapping[str, Any] | None
) -> dict[str, float]:
    """The hardware cost ``hardware`` asks for (see ``measure_configured_cost``), or only
    ``params`` with ``hardware.measure: false``."""
    hardware = hardware or {}
    if hardware.get("measure", True):
        return dict(measure_configured_cost(model, input_shape, hardware))
    return {"params": float(sum(p.numel() for p in model.parameters()))}


def check_budget(train_cfg: Mapping[str, Any]) -> int:
    """``train.epochs`` (>= 1) once ``train.batch_size`` >= 1 and ``train.lr`` > 0 are checked
    too; else a ValueError naming all three."""
    epochs, batch_size = int(train_cfg["epochs"]), int(train_cfg["batch_size"])
    lr = float(train_cfg["lr"])
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(
            f"train.epochs = {epochs}, train.batch_size = {batch_size}, train.lr = {lr}: "
            "expected epochs >= 1, batch_size >= 1 and lr > 0"
        )
    return epochs


def training_batches(data: Any, batch_size: int, seed: int) -> DataLoader:
    """Shuffled (seeded), augmented batches of ``data.train`` through ``data.loader``. A last
    batch of a single image is dropped: BatchNorm cannot train on one image whose features are
    pooled to 1x1. Too few images for one batch is a ValueError."""
    loader = data.loader(
        data.augmented_train,
        batch_size,
        shuffle=True,
        seed=seed,
        drop_last=len(data.train) % batch_size == 1,
    )
    if len(loader) == 0:
        raise ValueError(
            f"the training split has {len(data.train)} image(s): too few to train on; raise "
            "train.train_fraction or add data"
        )
    return loader


def cosine_optimizer(
    model: nn.Module, train_cfg: DictConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """``make_optimizer``'s optimizer and a cosine schedule to 0 over ``total_steps`` steps."""
    optimizer = make_optimizer(model, train_cfg)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    clip_norm: float | None = None,
) -> None:
    """One training step on ``loss``: its (scaled, for fp16) gradients, clipped to a total norm
    of ``clip_norm`` over the optimiser's parameters if given, the optimiser's step and the
    schedule's."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_norm is not None:
        scaler.unscale_(optimizer)  # clip the true gradient (a no-op unless fp16)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, clip_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def check_finite_loss(train_loss: float, epoch: int, train_cfg: Mapping[str, Any]) -> None:
    """A FloatingPointError if an epoch's mean training loss is NaN or infinite."""
    if not math.isfinite(train_loss):
        raise FloatingPointError(
            f"training loss is {train_loss} at epoch {epoch}: the model diverged; lower "
            f"train.lr (now {train_cfg['lr']}) or change the architecture"
        )
