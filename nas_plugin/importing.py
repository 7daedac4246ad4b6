"""``"package.module:name"`` strings in configs (a space's ``space_class`` and ``equivalent``
hook, a proxy factory, a strategy's end-of-sweep report) resolved to the object they name.

One parser and one set of messages; each caller says which config key it was and what kind of
object it expects, so the error names the key, the value and what is allowed.
"""

from __future__ import annotations

import importlib
from typing import Any


class ImportSpecError(ValueError):
    """The spec is malformed, its module does not import, or the module lacks the name."""


def load_object(spec: Any, kind: str = "object") -> Any:
    """The object ``spec`` (``"module:name"``) names; ``kind`` (function, class...) words the
    errors."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ImportSpecError(f"{spec!r} must be 'module:{kind}'")
    module_name, name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportSpecError(f"{spec!r}: cannot import module {module_name!r}: {err}") from err
    if not hasattr(module, name):
        raise ImportSpecError(f"{spec!r}: module {module_name!r} has no {kind} {name!r}")
    return getattr(module, name)
