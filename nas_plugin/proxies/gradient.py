"""Proxies from the loss gradient at initialisation: ``snip``, ``grad_norm``, ``grasp``,
``fisher`` (as implemented for NAS by Abdelfattah et al., "Zero-Cost Proxies for Lightweight
NAS", ICLR 2021).

Every function takes a scoring copy of the model (in :func:`~nas_plugin.proxies.base.scoring_mode`)
and the minibatches. With several batches, ``snip``, ``grad_norm`` and ``grasp`` use the
gradient of their mean loss; ``fisher`` is the mean of its per-batch scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from nas_plugin.proxies.base import Batch, ProxyError, model_loss, weights


def snip(model: nn.Module, batches: Sequence[Batch]) -> float:
    """SNIP's connection sensitivity (Lee et al., 2019): sum of |theta * dL/dtheta|."""
    params = weights(model)
    grads = _loss_gradients(model, batches, params)
    return float(sum((p.detach() * g).abs().sum() for p, g in zip(params, grads, strict=True)))


def grad_norm(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Sum over weight tensors of the L2 norm of the loss gradient."""
    grads = _loss_gradients(model, batches, weights(model))
    return float(sum(g.norm() for g in grads))


def grasp(model: nn.Module, batches: Sequence[Batch]) -> float:
    """GraSP (Wang et al., 2020): -sum(theta * H g), H the loss Hessian, g its gradient.

    ``H g`` is a Hessian-vector product: the gradient of ``g_detached . dL/dtheta``, which
    needs every op twice differentiable.
    """
    _twice_differentiable(model)
    params = weights(model)
    grads = _loss_gradients(model, batches, params)
    hessian_grad = [torch.zeros_like(p) for p in params]
    try:
        # Attention's fused CPU/CUDA kernels have no second derivative; the math one has.
        with sdpa_kernel(SDPBackend.MATH):
            _add_hessian_grad(model, batches, params, grads, hessian_grad)
    except RuntimeError as err:
        if "derivative for" not in str(err):
            raise
        raise ProxyError(f"grasp needs second derivatives, which this model lacks: {err}") from err
    return float(-sum((p.detach() * hg).sum() for p, hg in zip(params, hessian_grad, strict=True)))


def _add_hessian_grad(
    model: nn.Module,
    batches: Sequence[Batch],
    params: list[nn.Parameter],
    grads: list[torch.Tensor],
    hessian_grad: list[torch.Tensor],
) -> None:
    for inputs, targets in batches:
        loss = model_loss(model, inputs, targets) / len(batches)
        first = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        product = sum((g * f).sum() for g, f in zip(grads, first, strict=True) if f is not None)
        if not isinstance(product, torch.Tensor) or not product.requires_grad:
            continue  # the loss does not depend on any weight twice (e.g. a linear model)
        second = torch.autograd.grad(product, params, allow_unused=True)
        for total, part in zip(hessian_grad, second, strict=True):
            if part is not None:
                total += part


def _twice_differentiable(model: nn.Module) -> None:
    """Swap, in place, Hardsigmoid (whose backward has no derivative in torch) for the same
    function written with ReLU6 (MobileNetV3's squeeze-and-excitation gates use it)."""
    for module in model.modules():
        if isinstance(module, nn.Hardsigmoid):
            module.forward = _hard_sigmoid


def _hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x + 3.0) / 6.0


def fisher(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Fisher information of every conv/linear output channel (Theis et al., 2018; Turner et
    al., 2020): ``0.5 * mean over examples of (sum over positions of a * dL/da) ** 2``; as in
    Abdelfattah et al.'s code, each channel's value counts once per weight of that channel (its
    fan-in: in_channels x kernel size), summed over channels and layers; averaged over the
    batches."""
    layers = [m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    outputs: list[tuple[torch.Tensor, int, int]] = []

    def keep(channel_dim: int) -> Callable[..., torch.Tensor | None]:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                return None
            output.retain_grad()
            # The reference broadcasts a channel's value to its weights before summing.
            fan_in = module.weight[0].numel()
            outputs.append((output, channel_dim, fan_in))
            # Later in-place ops (ReLU(inplace=True)) must not rewrite the stored activation.
            return output.clone()

        return hook

    handles = [m.register_forward_hook(keep(1)) for m in layers]
    handles += [m.register_forward_hook(keep(-1)) for m in linears]
    total = 0.0
    try:
        for inputs, targets in batches:
            outputs.clear()
            model.zero_grad(set_to_none=True)
            model_loss(model, inputs, targets).backward()
            for activation, channel_dim, fan_in in outputs:
                if activation.grad is None:
                    continue  # an output that does not reach the loss
                per_channel = _per_example_channel_sums(
                    activation.detach() * activation.grad, channel_dim
                )
                total += float(0.5 * per_channel.square().mean(dim=0).sum()) * fan_in
    finally:
        for handle in handles:
            handle.remove()
    return total / len(batches)


def _per_example_channel_sums(values: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``values`` summed over every dimension but the batch (0) and the channel: N x C."""
    if values.ndim == 1:
        return values.unsqueeze(1)
    values = values.movedim(channel_dim, 1)
    return values.reshape(values.shape[0], values.shape[1], -1).sum(dim=2)


def _loss_gradients(
    model: nn.Module, batches: Sequence[Batch], params: list[nn.Parameter]
) -> list[torch.Tensor]:
    """d(mean loss over the batches)/d(params); zeros for a parameter the loss does not use."""
    totals = [torch.zeros_like(p) for p in params]
    for inputs, targets in batches:
        loss = model_loss(model, inputs, targets) / len(batches)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for total, grad in zip(totals, grads, strict=True):
            if grad is not None:
                total += grad
    return totals
