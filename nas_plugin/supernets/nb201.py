"""The NAS-Bench-201 weight-sharing supernet: all five operations on every edge of the cell.

The skeleton (stem, stages, residual reductions, head) is :class:`~nas_plugin.models.nb201.
NB201Network`'s, with the same module names, so weights move between the supernet and any
stand-alone cell network (:meth:`NB201Supernet.extract`, :meth:`NB201Supernet.load_standalone`).
As in NB201 itself, every cell of the network uses the same cell architecture.

One forward pass, four ways of choosing each edge's operation:

- a **path** (six operation names, edge order): one operation per edge, the others idle. A fixed
  architecture evaluates a candidate with inherited weights; a uniformly sampled one per step is
  single-path one-shot training (SPOS, Guo et al. 2020).
- **weights** (a 6 x 5 tensor, rows = edges, columns = :data:`~nas_plugin.space.nb201.OPS`):
  node ``j`` = sum over edges and operations of ``weight * op(node i)``. With
  ``softmax(alpha)`` this is DARTS's continuous relaxation; with :func:`gumbel_hard` (GDAS) or
  :func:`binary_gates` / :func:`two_path_gates` (ProxylessNAS) the weights are one-hot in value
  but carry the gradient of their relaxation, and only operations with a non-zero weight are
  computed when ``active_only`` is set, or only those of a ``compute`` mask (ProxylessNAS's
  two-path architecture step: the sampled inactive path is computed too, with gate value 0, for
  its gate's gradient).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_plugin.models.nb201 import NB201Network, build_skeleton, make_op
from nas_plugin.space.nb201 import EDGE_KEYS, EDGES, OPS

# The operations with a module (``none`` contributes zero and has no weights).
PARAMETRIC_OPS = tuple(op for op in OPS if op != "none")


class SuperCell(nn.Module):
    """An NB201 cell holding every operation on every edge: ``edges[edge_key][op]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict(
            {
                key: nn.ModuleDict({op: make_op(op, channels) for op in PARAMETRIC_OPS})
                for key in EDGE_KEYS
            }
        )

    def forward(
        self,
        x: torch.Tensor,
        path: Sequence[str] | None = None,
        weights: torch.Tensor | None = None,
        compute: list[list[bool]] | None = None,
    ) -> torch.Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            terms: list[torch.Tensor] = []
            for e, (key, (j, i)) in enumerate(zip(EDGE_KEYS, EDGES, strict=True)):
                if j != node:
                    continue
                ops = self.edges[key]
                if path is not None:
                    if path[e] != "none":
                        terms.append(ops[path[e]](nodes[i]))
                    continue
                assert weights is not None
                for k, op in enumerate(OPS):
                    # `none` adds weight * 0; an inactive sampled op adds nothing either.
                    if op == "none":
                        continue
                    if compute is not None and not compute[e][k]:
                        continue
                    terms.append(weights[e, k] * ops[op](nodes[i]))
            nodes.append(sum(terms[1:], terms[0]) if terms else torch.zeros_like(x))
        return nodes[3]


class NB201Supernet(nn.Module):
    """The NB201 network with a :class:`SuperCell` in place of every cell."""

    def __init__(
        self,
        channels: int = 16,
        cells_per_stage: int = 5,
        num_classes: int = 10,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.channels, self.cells_per_stage = channels, cells_per_stage
        self.num_classes, self.in_chans = num_classes, in_chans
        build_skeleton(self, channels, cells_per_stage, num_classes, in_chans, SuperCell)

    def forward(
        self,
        x: torch.Tensor,
        path: Sequence[str] | None = None,
        weights: torch.Tensor | None = None,
        active_only: bool = False,
        compute: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits, with each edge's operation chosen by ``path`` or mixed by ``weights``;
        ``compute`` (6 x 5, bool) restricts a mixture to the operations it marks."""
        if (path is None) == (weights is None):
            raise ValueError("give exactly one of path (six operations) or weights (6 x 5)")
        if path is not None:
            check_path(path)
        elif tuple(weights.shape) != (len(EDGES), len(OPS)):  # type: ignore[union-attr]
            raise ValueError(
                f"weights has shape {tuple(weights.shape)}; expected ({len(EDGES)}, {len(OPS)})"  # type: ignore[union-attr]
            )
        # The mask as Python lists, read once per forward: testing each weight in every cell
        # would wait for the device once per operation.
        if compute is not None:
            mask = compute.tolist()
        elif active_only:
            mask = (weights.detach() != 0).tolist()  # type: ignore[union-attr]
        else:
            mask = None
        out = self.stem(x)
        for layer in self.cells:
            if isinstance(layer, SuperCell):
                out = layer(out, path=path, weights=weights, compute=mask)
            else:
                out = layer(out)
        return self.classifier(self.head(out))

    def extract(self, path: Sequence[str]) -> NB201Network:
        """A stand-alone :class:`NB201Network` of cell ``path`` with the inherited weights
        (BatchNorm statistics included)."""
        check_path(path)
        net = NB201Network(
            path, self.channels, self.cells_per_stage, self.num_classes, self.in_chans
        )
        net.load_state_dict(self._standalone_state(path))
        return net

    def load_standalone(self, net: NB201Network) -> None:
        """Copy a stand-alone network's weights into the supernet (its cell's operations only)."""
        own = self.state_dict()
        for name, value in net.state_dict().items():
            own[_super_name(name, net.ops)] = value
        self.load_state_dict(own)

    def _standalone_state(self, path: Sequence[str]) -> dict[str, torch.Tensor]:
        own = self.state_dict()
        template = NB201Network(
            path, self.channels, self.cells_per_stage, self.num_classes, self.in_chans
        ).state_dict()
        return {name: own[_super_name(name, tuple(path))].clone() for name in template}


def _super_name(name: str, path: Sequence[str]) -> str:
    """The supernet's name of a stand-alone parameter: ``cells.0.edges.edge_1_0.1.weight`` ->
    ``cells.0.edges.edge_1_0.nor_conv_3x3.1.weight``."""
    parts = name.split(".")
    if len(parts) > 3 and parts[0] == "cells" and parts[2] == "edges":
        op = path[EDGE_KEYS.index(parts[3])]
        return ".".join([*parts[:4], op, *parts[4:]])
    return name


def check_path(path: Sequence[str]) -> None:
    if len(path) != len(EDGES) or any(op not in OPS for op in path):
        raise ValueError(
            f"path {tuple(path)!r} is not an NB201 cell: expected {len(EDGES)} operations from "
            f"{list(OPS)}"
        )


def sample_path(rng: random.Random) -> tuple[str, ...]:
    """A uniformly random cell (SPOS's sampling)."""
    return tuple(rng.choice(OPS) for _ in EDGES)


def gumbel_hard(
    alpha: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """GDAS's sample: one-hot per edge (argmax of ``alpha`` + Gumbel noise) in value, with the
    gradient of the tempered Gumbel-softmax (straight-through)."""
    # Drawn on the CPU (the generator's device), so a seed gives the same cells on any device.
    uniform = torch.rand(alpha.shape, generator=generator).clamp_(1e-9, 1 - 1e-9)
    uniform = uniform.to(alpha.device)
    gumbel = -torch.log(-torch.log(uniform))
    soft = F.softmax((F.log_softmax(alpha, dim=-1) + gumbel) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(dim=-1), alpha.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def binary_gates(alpha: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ProxylessNAS's binarised paths: one operation per edge sampled from ``softmax(alpha)``,
    one-hot in value, with BinaryConnect's gradient ``dL/dp`` through the softmax."""
    probs = F.softmax(alpha, dim=-1)
    chosen = _sample(probs, 1, generator).squeeze(-1)
    hard = F.one_hot(chosen, alpha.shape[-1]).to(probs.dtype)
    return hard - probs.detach() + probs


def two_path_gates(
    alpha: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ProxylessNAS's memory-saving architecture step (Cai et al. 2019, sec. 3.2.1): on every
    edge two operations are sampled from ``softmax(alpha)`` without replacement, and one of them
    is made active by the softmax over the pair's ``alpha``.

    Returns ``(gates, compute, pairs)``: the gates are one-hot (the active operation) in value,
    with BinaryConnect's gradient through the pair's softmax, so ``dL/dalpha_i = sum_j dL/dg_j
    p_j (delta_ij - p_i)`` over the two sampled operations only (the others get none);
    ``compute`` marks the two operations to run (the inactive one with gate 0, for its gate's
    gradient); ``pairs`` (edges x 2) are their indices, for :func:`rescale_pairs`."""
    probs = F.softmax(alpha.detach(), dim=-1)
    pairs = _sample(probs, 2, generator)
    pair_probs = F.softmax(alpha.gather(1, pairs), dim=-1)
    which = _sample(pair_probs, 1, generator)
    active = pairs.gather(1, which).squeeze(-1)
    hard = F.one_hot(active, alpha.shape[-1]).to(pair_probs.dtype)
    soft = torch.zeros_like(alpha).scatter(1, pairs, pair_probs)
    # On the CPU: the forward reads it as Python lists.
    compute = torch.zeros(alpha.shape, dtype=torch.bool).scatter(1, pairs.cpu(), True)
    return hard - soft.detach() + soft, compute, pairs


def _sample(probs: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """``count`` indices per row drawn without replacement from ``probs``, on the CPU with
    ``generator`` (a seed gives the same draws on any device), returned on ``probs``' device."""
    drawn = torch.multinomial(probs.detach().cpu(), count, replacement=False, generator=generator)
    return drawn.to(probs.device)


@torch.no_grad()
def rescale_pairs(alpha: torch.Tensor, before: torch.Tensor, pairs: torch.Tensor) -> None:
    """After an architecture step on sampled pairs: shift the pair's ``alpha`` so that their
    total ``exp`` is what it was before the step, so the unsampled operations' probabilities
    stay as they were (ProxylessNAS's rescaling; ``before`` = ``alpha`` before the step)."""
    old = before.gather(1, pairs)
    new = alpha.gather(1, pairs)
    offset = torch.logsumexp(new, dim=-1, keepdim=True) - torch.logsumexp(old, dim=-1, keepdim=True)
    alpha.scatter_(1, pairs, new - offset)


def derive(alpha: torch.Tensor) -> tuple[str, ...]:
    """The discrete cell: the operation of largest weight on each edge (NB201's rule, ``none``
    included)."""
    return tuple(OPS[int(k)] for k in alpha.argmax(dim=-1))
