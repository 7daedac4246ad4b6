"""What every task's training starts from: seeded random generators and the optimizer chosen by
``train.optimizer``."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

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
