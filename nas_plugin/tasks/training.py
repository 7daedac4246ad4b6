"""What every task's training starts from: seeded random generators, the checked training
budget, the runtime (device, precision), the untrained model's cost, and the optimizer chosen
by ``train.optimizer``."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

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
    epochs, batch_size, lr = int(train_cfg.epochs), int(train_cfg.batch_size), float(train_cfg.lr)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(
            f"train.epochs = {epochs}, train.batch_size = {batch_size}, train.lr = {lr}: "
            "expected epochs >= 1, batch_size >= 1 and lr > 0"
        )
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
