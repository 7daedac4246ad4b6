"""Checks of config values shared by the model builders and the tasks' data: one message for one
mistake, naming the key, the value and what is allowed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def positive_int(
    cfg: Mapping[str, Any], field: str, key: str | None = None, *, group: str = "model"
) -> int:
    """``cfg[field]``, an integer >= 1, else a ValueError naming ``key`` (``<group>.<field>``
    unless given)."""
    value = cfg.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{key or group + '.' + field} = {value!r} is not allowed: expected an integer >= 1"
        )
    return value
