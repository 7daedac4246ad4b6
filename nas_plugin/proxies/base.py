"""What every proxy shares: minibatches, calling a model, its loss, and scoring modes.

A **batch** is ``(inputs, targets)``: ``inputs`` is a tensor (images) or a mapping of tensors
passed as keyword arguments (a transformers tokenizer's ``input_ids`` / ``attention_mask``);
``targets`` are class indices (cross-entropy) or float values (mean squared error). A model may
return a tensor of logits, a mapping with ``"logits"`` (a transformers ``ModelOutput``), an object
with ``.logits`` or a tuple whose first item is the logits.

A model whose loss is not a function of its logits and class indices (a detector: its loss
assigns boxes to locations) defines ``proxy_loss(inputs, targets) -> scalar tensor``; the
gradient proxies (``snip``, ``grad_norm``, ``fisher``, ``grasp``) then differentiate that, and
its ``targets`` may be any tensor the method understands (e.g. padded boxes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Inputs = torch.Tensor | Mapping[str, torch.Tensor]
Batch = tuple[Inputs, torch.Tensor]

_CONTAINERS = (list, tuple)
# Element-wise activation modules. ReLU-like ones switch a unit on or off by the sign of its
# pre-activation; squashing ones bound it; gates (sigmoids) scale another tensor by (0, 1).
_RELU_LIKE_TYPES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
)
_SQUASHING_TYPES = (nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Softsign)
_GATE_TYPES = (nn.Sigmoid, nn.Hardsigmoid)
# timm's and transformers' own activation classes (GELUActivation, QuickGELU, HardSwish ...),
# recognised by name because they do not subclass torch's.
_LIBRARIES = ("timm.", "transformers.")
_RELU_LIKE_NAMES = re.compile(r"relu|gelu|silu|swish|mish|elu", re.IGNORECASE)
_SQUASHING_NAMES = re.compile(r"tanh|softplus", re.IGNORECASE)
_GATE_NAMES = re.compile(r"sigmoid", re.IGNORECASE)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)
_NORM_NAMES = re.compile(r"(LayerNorm|RMSNorm)$")


class ProxyError(ValueError):
    """A proxy cannot score this model or these inputs; the message says why."""


def as_batches(inputs: Any, targets: Any) -> list[Batch]:
    """One batch, or a list/tuple of batches with a matching list/tuple of targets."""
    if isinstance(inputs, _CONTAINERS):
        if not isinstance(targets, _CONTAINERS) or len(targets) != len(inputs):
            raise ProxyError(
                f"{len(inputs)} input batches need a list of as many target batches, got "
                f"{type(targets).__name__}"
            )
        batches = list(zip(inputs, targets, strict=True))
    else:
        batches = [(inputs, targets)]
    if not batches:
        raise ProxyError("no minibatch to score: give at least one batch of inputs")
    for batch_inputs, batch_targets in batches:
        if not isinstance(batch_inputs, torch.Tensor | Mapping):
            raise ProxyError(
                "inputs must be a tensor or a mapping of tensors, got "
                f"{type(batch_inputs).__name__}"
            )
        if not isinstance(batch_targets, torch.Tensor):
            raise ProxyError(f"targets must be a tensor, got {type(batch_targets).__name__}")
    return batches


def batch_size(inputs: Inputs) -> int:
    first = inputs if isinstance(inputs, torch.Tensor) else next(iter(inputs.values()))
    return int(first.shape[0])


def call(model: nn.Module, inputs: Inputs, **extra: Any) -> torch.Tensor:
    """The model's logits for ``inputs`` (keyword arguments when they are a mapping)."""
    output = model(**inputs, **extra) if isinstance(inputs, Mapping) else model(inputs, **extra)
    return logits_of(output)


def logits_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and "logits" in output:
        return output["logits"]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, _CONTAINERS) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ProxyError(
        f"cannot find logits in the model's output ({type(output).__name__}): return a tensor, "
        "a mapping with 'logits', or an object with a .logits tensor"
    )


def model_loss(model: nn.Module, inputs: Inputs, targets: torch.Tensor) -> torch.Tensor:
    """The loss the gradient proxies differentiate: the model's own ``proxy_loss`` when it has
    one, else :func:`loss_of` its logits."""
    own = getattr(model, "proxy_loss", None)
    if callable(own):
        return own(inputs, targets)
    return loss_of(call(model, inputs), targets)


def loss_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for class indices, mean squared error for float targets (regression)."""
    if targets.is_floating_point():
        return F.mse_loss(logits.reshape(targets.shape).to(targets.dtype), targets)
    return F.cross_entropy(logits, targets)


def weights(model: nn.Module) -> list[nn.Parameter]:
    """Parameters with at least 2 dimensions: convolution kernels, linear and embedding
    matrices. The gradient proxies score these only, as in their papers (norms and biases are
    left out)."""
    return [p for p in model.parameters() if p.ndim >= 2]


def leaf_modules(model: nn.Module) -> Iterator[nn.Module]:
    return (m for m in model.modules() if next(m.children(), None) is None)


def is_relu_like(module: nn.Module) -> bool:
    """A ReLU-like activation module (ReLU, ReLU6, LeakyReLU, GELU, SiLU, Hardswish, Mish ...),
    whose sign of pre-activation says whether the unit is on."""
    return isinstance(module, _RELU_LIKE_TYPES) or _library_activation(module, _RELU_LIKE_NAMES)


def is_squashing(module: nn.Module) -> bool:
    """Tanh, Hardtanh, Softplus ... (not ReLU-like, not a gate)."""
    return not is_relu_like(module) and (
        isinstance(module, _SQUASHING_TYPES) or _library_activation(module, _SQUASHING_NAMES)
    )


def is_gate(module: nn.Module) -> bool:
    """Sigmoid and Hardsigmoid modules: squeeze-and-excitation and other gates."""
    return isinstance(module, _GATE_TYPES) or _library_activation(module, _GATE_NAMES)


def _library_activation(module: nn.Module, names: re.Pattern[str]) -> bool:
    cls = type(module)
    return (
        cls.__module__.startswith(_LIBRARIES)
        and next(module.children(), None) is None
        and bool(names.search(cls.__name__))
    )


def is_norm(module: nn.Module) -> bool:
    """BatchNorm / InstanceNorm / GroupNorm / LayerNorm / RMSNorm, incl. subclasses (timm's
    BatchNormAct2d, LayerNorm2d) and transformers' own ``*LayerNorm`` / ``*RMSNorm`` classes."""
    return isinstance(module, _NORMS) or (
        bool(_NORM_NAMES.search(type(module).__name__))
        and isinstance(getattr(module, "weight", None), torch.Tensor)
    )


def scoring_mode(model: nn.Module) -> None:
    """Eval mode except BatchNorm, which normalises with the batch's statistics.

    Freshly initialised running statistics (mean 0, variance 1) would not normalise anything,
    so BatchNorm runs as in training; dropout and drop-path are off so that a proxy measures the
    network, not a random mask.
    """
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()


def examples_needed(name: str, batches: Sequence[Batch], minimum: int = 2) -> None:
    for inputs, _ in batches:
        if batch_size(inputs) < minimum:
            raise ProxyError(
                f"proxy '{name}' compares the examples of a batch: give batches of at least "
                f"{minimum} examples (got {batch_size(inputs)})"
            )


def device_of(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
