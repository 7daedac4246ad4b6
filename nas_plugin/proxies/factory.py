"""Model factories: how a trial's config becomes the model and minibatches a proxy scores.

A factory is named ``"module:function"`` and called as
``function(cfg, batch_size, batches, seed) -> (model, inputs, targets)``: ``cfg`` is the trial's
composed config, ``model`` the freshly initialised network the trial would train, ``inputs`` and
``targets`` lists of ``batches`` minibatches of ``batch_size`` examples drawn with ``seed``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from nas_plugin.proxies.base import ProxyError

# Our vision task (pipelines/vision.py); a task of another app names its own.
DEFAULT_FACTORY = "nas_plugin.tasks.vision_proxy:proxy_inputs"

Factory = Callable[[Any, int, int, int], tuple[Any, Any, Any]]


def load_factory(spec: str) -> Factory:
    """The function ``spec`` (``"module:function"``) names; a ProxyError saying what is wrong."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ProxyError(f"factory {spec!r} must be 'module:function', e.g. {DEFAULT_FACTORY!r}")
    module_name, function_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ProxyError(f"factory {spec!r}: cannot import module {module_name!r}: {err}") from err
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ProxyError(
            f"factory {spec!r}: module {module_name!r} has no function {function_name!r}"
        )
    return function
