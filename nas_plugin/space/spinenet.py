"""SpineNet's architecture as plain values (the keys ``model.blocks.block_<k>.{level, type,
input_1, input_2}`` and ``model.pyramid.fusion`` of ``search_space=spinenet``).

A one-shot search reports its derived architecture as a *cell* mapping of those keys relative
to ``model`` (every block's four fields and the fusion), and tags its run with the string
:func:`to_arch_str` writes::

    spinenet blocks.block_1.input_1=1 blocks.block_1.input_2=2 ... pyramid.fusion=none

Pure Python: the strategies and the resume of a sweep read it without torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nas_plugin.space.params import SearchSpaceError

PREFIX = "spinenet"
#: the keys the SpineNet supernet shares weights over (full names, under ``model``)
ARCH_KEY = re.compile(
    r"model\.blocks\.block_(\d+)\.(level|type|input_1|input_2)|model\.pyramid\.fusion"
)
_INT_FIELDS = ("level", "input_1", "input_2")


def to_arch_str(cell: Mapping[str, Any]) -> str:
    """``spinenet`` then ``<key>=<value>`` for every key of ``cell``, sorted."""
    if not cell:
        raise SearchSpaceError("a SpineNet architecture needs at least one key")
    return " ".join([PREFIX, *(f"{k}={cell[k]}" for k in sorted(cell))])


def is_arch_str(text: str) -> bool:
    """Whether ``text`` is a SpineNet string (see :func:`to_arch_str`)."""
    return text.startswith(PREFIX + " ")


def from_arch_str(text: str) -> dict[str, Any]:
    """The cell mapping of a :func:`to_arch_str` string (levels and inputs as integers)."""
    parts = text.split()
    if not parts or parts[0] != PREFIX or len(parts) < 2:
        raise SearchSpaceError(f"SpineNet string {text!r} must be 'spinenet <key>=<value> ...'")
    cell: dict[str, Any] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or not ARCH_KEY.fullmatch(f"model.{key}"):
            raise SearchSpaceError(
                f"SpineNet string {text!r}: {part!r} is not <key>=<value> with a key "
                "blocks.block_<k>.{level,type,input_1,input_2} or pyramid.fusion"
            )
        cell[key] = int(value) if key.rpartition(".")[2] in _INT_FIELDS else value
    return cell
