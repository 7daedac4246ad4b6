"""Zero-cost proxies: rank untrained architectures from one or a few minibatches.

A proxy scores a **freshly initialised** network without training it; a higher score predicts a
better trained network. Call :func:`score` with a model, inputs and targets::

    from nas_plugin.proxies import score
    score(model, images, labels, proxies=("synflow", "naswot"), seed=0)
    # {"synflow": 3.1e+14, "naswot": 812.4}

Proxies (all "higher is better"): ``synflow``, ``naswot``, ``snip``, ``grad_norm``, ``fisher``,
``jacob_cov``, ``grasp``, and the baselines ``params`` and ``flops``. ``ensemble`` ranks a set
of candidates by several proxies at once: :func:`ensemble_ranks`.

Each proxy runs on a deep copy of the model (so the model's weights, buffers and train/eval flags
are never changed) under ``torch.manual_seed(seed)`` in a forked RNG (the caller's random state
is untouched). Gradient and activation proxies run with BatchNorm on batch statistics and
dropout off (see :func:`~nas_plugin.proxies.base.scoring_mode`); ``synflow`` runs in eval mode on
a linearised float64 copy. Inputs are a tensor or a mapping of tensors (transformers:
``input_ids``, ``attention_mask``), or a list of such batches with a list of targets.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from nas_plugin.proxies.activation import jacob_cov, naswot
from nas_plugin.proxies.base import Batch, ProxyError, as_batches, scoring_mode
from nas_plugin.proxies.baseline import flops, params
from nas_plugin.proxies.ensemble import DEFAULT_ENSEMBLE, ENSEMBLE, ensemble_ranks
from nas_plugin.proxies.flow import synflow
from nas_plugin.proxies.gradient import fisher, grad_norm, grasp, snip

ProxyFunction = Callable[[nn.Module, Sequence[Batch]], float]

PROXIES: dict[str, ProxyFunction] = {
    "synflow": synflow,
    "naswot": naswot,
    "snip": snip,
    "grad_norm": grad_norm,
    "fisher": fisher,
    "jacob_cov": jacob_cov,
    "grasp": grasp,
    "params": params,
    "flops": flops,
}
# Every name a config may use: the per-model proxies and the rank ensemble over candidates.
PROXY_NAMES: tuple[str, ...] = (*PROXIES, ENSEMBLE)
DEFAULT_PROXIES: tuple[str, ...] = ("synflow", "naswot")


def check_proxies(proxies: str | Sequence[str], allow_ensemble: bool = False) -> tuple[str, ...]:
    """``proxies`` as a tuple of known names without repeats; a ProxyError naming the bad one."""
    names = (proxies,) if isinstance(proxies, str) else tuple(proxies)
    allowed = list(PROXY_NAMES if allow_ensemble else PROXIES)
    if not names:
        raise ProxyError(f"no proxy given; allowed: {allowed}")
    for name in names:
        if name == ENSEMBLE and not allow_ensemble:
            raise ProxyError(
                "'ensemble' ranks a set of candidates and has no score for one model: score "
                "each candidate with its member proxies and call ensemble_ranks"
            )
        if name not in allowed:
            raise ProxyError(f"proxy {name!r} is unknown; allowed: {allowed}")
    return tuple(dict.fromkeys(names))


def score(
    model: nn.Module,
    inputs: Any,
    targets: Any,
    proxies: str | Sequence[str] = DEFAULT_PROXIES,
    seed: int = 0,
) -> dict[str, float]:
    """``{proxy: score}`` of ``model`` on the minibatch(es) ``inputs`` / ``targets``.

    The model must be on the inputs' device; it is never modified.
    """
    names = check_proxies(proxies)
    batches = as_batches(inputs, targets)
    return {name: _score_one(name, model, batches, seed) for name in names}


def _score_one(name: str, model: nn.Module, batches: list[Batch], seed: int) -> float:
    scored = copy.deepcopy(model)
    scored.requires_grad_(True)  # a frozen layer is still part of the architecture
    scoring_mode(scored)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        return float(PROXIES[name](scored, batches))


__all__ = [
    "DEFAULT_ENSEMBLE",
    "DEFAULT_PROXIES",
    "ENSEMBLE",
    "PROXIES",
    "PROXY_NAMES",
    "ProxyError",
    "check_proxies",
    "ensemble_ranks",
    "score",
]
