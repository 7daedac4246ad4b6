"""What the bilevel one-shot searches share (DARTS/GDAS/ProxylessNAS on NB201 in
:mod:`~nas_plugin.oneshot.search`, on Auto-DeepLab in :mod:`~nas_plugin.oneshot.autodeeplab_search`
and on SpineNet in :mod:`~nas_plugin.oneshot.spinenet_search`; ENAS takes the loss check): the
two optimisers, the two halves of the training split, the weight schedule, GDAS's temperature,
the check of an epoch's mean weight loss, and second-order DARTS's unrolled gradient."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
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


def virtual_step(
    w_opt: torch.optim.SGD, params: list[torch.Tensor], grads: list[torch.Tensor]
) -> list[torch.Tensor]:
    """The weights one step of ``w_opt`` (SGD, no dampening or Nesterov) would give with these
    gradients, without taking it: ``w - lr * (momentum * buffer + g + weight_decay * w)``, as
    DARTS's ``_compute_unrolled_model`` (no buffer yet: the first step, plain SGD)."""
    group = w_opt.param_groups[0]
    lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
    out = []
    for p, g in zip(params, grads, strict=True):
        step = g + decay * p
        buffer = w_opt.state.get(p, {}).get("momentum_buffer")
        if buffer is not None and momentum:
            step = step + momentum * buffer
        out.append((p - lr * step).detach())
    return out


def unrolled_step(
    net: nn.Module,
    arch_params: Sequence[nn.Parameter],
    arch_inputs: Callable[[], dict[str, torch.Tensor]],
    xw: torch.Tensor,
    yw: torch.Tensor,
    xa: torch.Tensor,
    ya: torch.Tensor,
    w_opt: torch.optim.SGD,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> float:
    """Second-order DARTS (:func:`unrolled_gradients`) of a supernet that takes the architecture
    as keyword arguments: ``arch_inputs()`` gives them from the architecture parameters (NB201:
    ``weights=softmax(alpha)``; Auto-DeepLab: the cell and move weights), ``loss_fn(logits,
    labels)`` the loss of ``net(x, **arch_inputs())``."""
    names = [n for n, _ in net.named_parameters()]
    buffers = dict(net.named_buffers())

    def loss_at(x: torch.Tensor, y: torch.Tensor) -> Callable[[list[torch.Tensor]], torch.Tensor]:
        def loss(weights: list[torch.Tensor]) -> torch.Tensor:
            state = {**dict(zip(names, weights, strict=True)), **buffers}
            return loss_fn(functional_call(net, state, (x,), arch_inputs()), y)

        return loss

    params = [p for _, p in net.named_parameters()]
    return unrolled_gradients(params, arch_params, loss_at(xw, yw), loss_at(xa, ya), w_opt)


def unrolled_gradients(
    params: list[torch.Tensor],
    arch_params: Sequence[nn.Parameter],
    train_loss: Callable[[list[torch.Tensor]], torch.Tensor],
    val_loss: Callable[[list[torch.Tensor]], torch.Tensor],
    w_opt: torch.optim.SGD,
) -> float:
    """Second-order DARTS: set each architecture parameter's ``.grad`` to the gradient of
    ``val_loss`` at the weights after one virtual step of ``w_opt`` on ``train_loss``
    (:func:`virtual_step`), ``xi`` = its lr, the Hessian-vector product by central finite
    differences (Liu et al., 2019, eq. 8); return the architecture loss.

    ``train_loss(weights)`` / ``val_loss(weights)``: the loss of a batch of each half with the
    network's parameters ``params`` replaced by ``weights`` (e.g. ``functional_call``), its
    architecture computed afresh from ``arch_params`` on every call (each call's graph is
    freed by its gradient). In fp32 whatever the runtime's precision (autocast off): the finite
    differences move the weights by ``eps = 0.01 / |grad|``, which bf16 would round away."""
    xi = w_opt.param_groups[0]["lr"]
    arch_params = list(arch_params)

    def grad(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        # A parameter the loss does not reach gets a zero gradient.
        found = torch.autograd.grad(loss, inputs, allow_unused=True)
        return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, found, strict=True)]

    with torch.autocast(device_type=params[0].device.type, enabled=False):
        grads = grad(train_loss(params), params)
        unrolled = [w.requires_grad_() for w in virtual_step(w_opt, params, grads)]
        arch_loss = val_loss(unrolled)
        found = grad(arch_loss, [*arch_params, *unrolled])
        g_arch, g_unrolled = found[: len(arch_params)], found[len(arch_params) :]
        norm = torch.sqrt(sum((g * g).sum() for g in g_unrolled))
        eps = 0.01 / float(norm.clamp_min(1e-12))
        with torch.no_grad():
            plus = [p + eps * g for p, g in zip(params, g_unrolled, strict=True)]
            minus = [p - eps * g for p, g in zip(params, g_unrolled, strict=True)]
        g_plus = grad(train_loss(plus), arch_params)
        g_minus = grad(train_loss(minus), arch_params)
    for param, g, gp, gm in zip(arch_params, g_arch, g_plus, g_minus, strict=True):
        param.grad = g - xi * (gp - gm) / (2 * eps)
    return arch_loss.item()
