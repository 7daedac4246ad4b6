"""Proxies from how a network tells the examples of one batch apart: ``naswot`` (activation
patterns) and ``jacob_cov`` (input-output Jacobians), both from Mellor et al., "Neural
Architecture Search without Training" (ICML 2021 and its 2020 preprint).

Both need at least two examples per batch; with several batches the score is their mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nas_plugin.proxies.base import (
    Batch,
    Inputs,
    ProxyError,
    batch_size,
    call,
    examples_needed,
    is_relu_like,
)

# jacob_cov's k: keeps log and 1/x finite for the correlation matrix's zero eigenvalues.
JACOB_COV_K = 1e-5


@torch.no_grad()
def naswot(model: nn.Module, batches: Sequence[Batch]) -> float:
    """log det of the NASWOT kernel ``K[i, j] = units where examples i and j agree (both on or
    both off)``, over every ReLU-like activation's pre-activation sign; plus the identity.

    ``K + I`` keeps the score finite when two examples share every pattern (a collapsed
    network: K is singular) and changes nothing visible otherwise (K's entries count thousands
    of units). GELU, SiLU, Hardswish ... count as on where their input is positive.
    """
    examples_needed("naswot", batches)
    activations = [m for m in model.modules() if is_relu_like(m)]
    if not activations:
        raise ProxyError(
            "naswot reads the on/off patterns of activation modules (nn.ReLU, nn.GELU, ...): "
            "this model has none (activations called as functions are invisible to it)"
        )
    kernel: torch.Tensor | None = None

    def add_patterns(module: nn.Module, args: tuple) -> None:
        nonlocal kernel
        on = (args[0] > 0).reshape(args[0].shape[0], -1).double()
        patterns = on @ on.T + (1.0 - on) @ (1.0 - on).T
        kernel = patterns if kernel is None else kernel + patterns

    handles = [m.register_forward_pre_hook(add_patterns) for m in activations]
    scores = []
    try:
        for inputs, _ in batches:
            kernel = None
            call(model, inputs)
            if kernel is None:
                raise ProxyError("naswot: no activation module ran in the forward pass")
            eye = torch.eye(kernel.shape[0], dtype=kernel.dtype, device=kernel.device)
            scores.append(float(torch.linalg.slogdet(kernel + eye).logabsdet))
    finally:
        for handle in handles:
            handle.remove()
    return sum(scores) / len(scores)


def jacob_cov(model: nn.Module, batches: Sequence[Batch]) -> float:
    """``-sum(log(v + k) + 1 / (v + k))`` over the eigenvalues ``v`` of the correlation matrix
    of the examples' Jacobians d(sum of outputs)/d(input): high when the Jacobians are
    uncorrelated. A transformers model is differentiated with respect to its input embeddings.

    An example whose Jacobian is constant (the output ignores that input) has no defined
    correlation; it counts as perfectly correlated with every other example.
    """
    examples_needed("jacob_cov", batches)
    scores = []
    for inputs, _ in batches:
        leaf, kwargs = _differentiable_inputs(model, inputs)
        logits = call(model, kwargs)
        (jacobian,) = torch.autograd.grad(logits.sum(), leaf, allow_unused=True)
        if jacobian is None:
            jacobian = torch.zeros_like(leaf)
        flat = jacobian.reshape(batch_size(inputs), -1).double()
        correlation = torch.nan_to_num(torch.corrcoef(flat), nan=1.0)
        correlation.fill_diagonal_(1.0)
        eigenvalues = torch.linalg.eigvalsh(correlation).clamp_min(0.0)
        shifted = eigenvalues + JACOB_COV_K
        scores.append(float(-(shifted.log() + shifted.reciprocal()).sum()))
    return sum(scores) / len(scores)


def _differentiable_inputs(model: nn.Module, inputs: Inputs) -> tuple[torch.Tensor, Inputs]:
    """(the tensor to differentiate by, the model's inputs built from it)."""
    if isinstance(inputs, torch.Tensor):
        if not inputs.is_floating_point():
            raise ProxyError(
                "jacob_cov differentiates with respect to the inputs: give float inputs, or a "
                "mapping with 'input_ids' for a transformers model"
            )
        leaf = inputs.detach().clone().requires_grad_(True)
        return leaf, leaf
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    ids = inputs.get("input_ids")
    if embeddings is None or not isinstance(ids, torch.Tensor):
        raise ProxyError(
            "jacob_cov on mapping inputs needs a transformers-style model "
            "(get_input_embeddings()) and an 'input_ids' tensor"
        )
    with torch.no_grad():
        leaf = embeddings(ids)
    leaf.requires_grad_(True)
    rest = {k: v for k, v in inputs.items() if k != "input_ids"}
    return leaf, {**rest, "inputs_embeds": leaf}
