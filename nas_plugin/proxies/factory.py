"""Model factories: how a trial's config becomes the model and minibatches a proxy scores.

A factory is named ``"module:function"`` and called as
``function(cfg, batch_size, batches, seed) -> (model, inputs, targets)``: ``cfg`` is the trial's
composed config, ``model`` the freshly initialised network the trial would train, ``inputs`` and
``targets`` lists of ``batches`` minibatches of ``batch_size`` examples drawn with ``seed``.
A factory may build on the CPU: the proxies score on the trial's ``train.device``
(:func:`config_device`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from nas_plugin.importing import ImportSpecError, load_object
from nas_plugin.proxies.base import ProxyError

# Our tasks' (vision, segmentation, detection pipelines: by the trial's model.kind); a task of
# another app names its own.
DEFAULT_FACTORY = "nas_plugin.tasks.proxy_factory:proxy_inputs"

Factory = Callable[[Any, int, int, int], tuple[Any, Any, Any]]


def config_device(cfg: Any) -> torch.device:
    """The device a trial config's ``train.device`` names on this machine (``auto`` when the
    config has none): where its untrained network is scored, as its training would run.

    Raises:
        DeviceError: a device this machine does not have, naming ``train.device``.
    """
    from nas_plugin.hardware.device import resolve_device

    train = cfg.get("train") if hasattr(cfg, "get") else None
    return resolve_device((train or {}).get("device", "auto"))


def load_factory(spec: str) -> Factory:
    """The function ``spec`` (``"module:function"``) names; a ProxyError saying what is wrong."""
    try:
        function = load_object(spec, kind="function")
    except ImportSpecError as err:
        raise ProxyError(f"factory {err}, e.g. {DEFAULT_FACTORY!r}") from err
    if not callable(function):
        raise ProxyError(f"factory {spec!r} is not a function")
    return function
