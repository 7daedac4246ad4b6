"""Baselines every proxy should beat: the network's size and its compute."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas_plugin.proxies.base import Batch, batch_size, call


def params(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Number of parameters (shared ones counted once)."""
    return float(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def flops(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Floating-point operations of one forward per example, on the first batch, as torch's
    ``FlopCounterMode`` counts them (2 per multiply-accumulate of matmuls and convolutions), the
    same count as ``nas_plugin.hardware.cost.measure_cost``."""
    inputs, _ = batches[0]
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        call(model, inputs)
    return counter.get_total_flops() / batch_size(inputs)
