"""``synflow``: Synaptic Flow (Tanaka et al., NeurIPS 2020), data-free.

Every parameter and buffer is replaced by its absolute value, the network is **linearised** and
run in float64 on one all-ones input; the score is ``sum |theta * dR/dtheta|`` over the weight
tensors, ``R`` the sum of the outputs. With non-negative weights and inputs a ReLU network is
already linear; linearising makes the same hold for the rest:

- ReLU-like and squashing activations (ReLU6, GELU, SiLU, Tanh ...) become the identity: a
  saturating one (ReLU6 at 6, a pooler's Tanh) would otherwise cut every path through it.
  Gates (the Sigmoid of squeeze-and-excitation) stay: they scale a path by a factor in (0, 1),
  and as identities they would square its magnitude at every gate and overflow float64;
- normalisation layers (BatchNorm, LayerNorm, GroupNorm, RMSNorm) keep only their affine part
  ``x * |gamma| + |beta|``: no batch or running statistics, and a LayerNorm of a constant
  vector would otherwise be zero.

float64 because the path sums grow with depth and overflow float32 in deep networks.
A transformers model gets ``inputs_embeds`` of ones in place of its token ids (an embedding
lookup of ones is not defined), and an all-ones attention mask.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nas_plugin.proxies.base import (
    Batch,
    Inputs,
    ProxyError,
    call,
    device_of,
    is_norm,
    is_relu_like,
    is_squashing,
    weights,
)


def synflow(model: nn.Module, batches: Sequence[Batch]) -> float:
    """The synaptic flow of ``model`` (changed in place: pass a copy); only the shape of the
    first batch's inputs is used."""
    inputs, _ = batches[0]
    model.double()
    model.eval()
    linearise(model)
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.is_floating_point():
                tensor.abs_()
    model.zero_grad(set_to_none=True)
    call(model, _one_input(model, inputs)).sum().backward()
    return float(
        sum((p.detach() * p.grad).abs().sum() for p in weights(model) if p.grad is not None)
    )


def linearise(model: nn.Module) -> None:
    """Replace, in place, activations (not gates) by the identity, norms by their affine part."""
    for module in model.modules():
        if is_norm(module):
            module.forward = _affine_part(module)
        elif is_relu_like(module) or is_squashing(module):
            module.forward = _identity


def _identity(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x


def _affine_part(module: nn.Module) -> Callable[..., torch.Tensor]:
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    channels_first = _channels_first(module)

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if isinstance(weight, torch.Tensor):
            x = x * _broadcast(weight, x, channels_first)
        if isinstance(bias, torch.Tensor):
            x = x + _broadcast(bias, x, channels_first)
        return x

    return forward


def _channels_first(module: nn.Module) -> bool:
    """Whether the norm's parameters scale dimension 1 (BatchNorm, GroupNorm, timm's
    LayerNorm2d on N x C x H x W) rather than the trailing ones (LayerNorm, RMSNorm)."""
    if isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm):
        return True
    return type(module).__name__.endswith(("1d", "2d", "3d"))


def _broadcast(param: torch.Tensor, x: torch.Tensor, channels_first: bool) -> torch.Tensor:
    if channels_first and x.ndim > 1:
        return param.reshape(1, -1, *([1] * (x.ndim - 2)))
    return param  # trailing dimensions (LayerNorm's normalized_shape) broadcast as they are


def _one_input(model: nn.Module, inputs: Inputs) -> Inputs:
    """One all-ones example shaped like those of ``inputs``."""
    device = device_of(model)
    if isinstance(inputs, Mapping):
        return _ones_embeddings(model, inputs, device)
    if inputs.is_floating_point():
        return torch.ones((1, *inputs.shape[1:]), dtype=torch.float64, device=device)
    # Integer inputs are token ids: the first example's, looked up in |embedding| weights.
    return inputs[:1]


def _ones_embeddings(
    model: nn.Module, inputs: Mapping[str, torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    ids = inputs.get("input_ids")
    if not isinstance(embeddings, nn.Embedding) or not isinstance(ids, torch.Tensor):
        raise ProxyError(
            "synflow on mapping inputs needs a transformers-style model (get_input_embeddings() "
            "returning an nn.Embedding) and an 'input_ids' tensor"
        )
    length = ids.shape[1]
    return {
        "inputs_embeds": torch.ones(
            (1, length, embeddings.embedding_dim), dtype=torch.float64, device=device
        ),
        "attention_mask": torch.ones((1, length), dtype=torch.long, device=device),
    }
