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

Scoring runs on the model's device, or on ``device`` when given (the copy and the batches are
moved there), always in float32 (synflow: float64) with autocast off: the proxies read
gradients and activation signs that half precision would round away or overflow.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nas_plugin.proxies.activation import jacob_cov, naswot
from nas_plugin.proxies.base import Batch, Inputs, ProxyError, as_batches, device_of, scoring_mode
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
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """``{proxy: score}`` of ``model`` on the minibatch(es) ``inputs`` / ``targets``.

    Scored on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a
    ``torch.device``; None: the model's own device), in float32; the model is never modified
    (nor moved).

    Raises:
        ProxyError: unknown proxies or malformed batches.
        DeviceError: ``device`` names a device this machine does not have.
    """
    names = check_proxies(proxies)
    target = scoring_device(model, device)
    batches = [(_moved(x, target), y.to(target)) for x, y in as_batches(inputs, targets)]
    return {name: _score_one(name, model, batches, seed, target) for name in names}


def scoring_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """``device`` resolved on this machine (see ``nas_plugin.hardware.device``); None: the
    model's own device."""
    if device is None:
        return device_of(model)
    if isinstance(device, torch.device):
        return device
    from nas_plugin.hardware.device import resolve_device

    return resolve_device(device, key="device")


def _moved(inputs: Inputs, device: torch.device) -> Inputs:
    """``inputs`` on ``device``, float ones in float32 (token ids and masks keep their type)."""

    def move(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device, torch.float32 if tensor.is_floating_point() else None)

    if isinstance(inputs, Mapping):
        return {k: move(v) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    return move(inputs)


def _score_one(
    name: str, model: nn.Module, batches: list[Batch], seed: int, device: torch.device
) -> float:
    scored = copy.deepcopy(model).to(device).float()  # fp32 whatever the model trains in
    scored.requires_grad_(True)  # a frozen layer is still part of the architecture
    scoring_mode(scored)
    # The seed also draws on the GPU (fork its generator too: the caller's stays untouched).
    gpus = [device.index or 0] if device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=gpus),
        torch.enable_grad(),
        _no_autocast(device),
    ):
        torch.manual_seed(seed)
        return float(PROXIES[name](scored, batches))


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Autocast off, should the caller have it on (the proxies need full-precision grads)."""
    if device.type in ("cpu", "cuda", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


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
    "scoring_device",
]
