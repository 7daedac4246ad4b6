"""Keep credentials out of MLflow: values under keys that look like secrets are masked."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# Whole key names (the last part of a dotted key). Not every "*_key": budget_key and
# key_column are settings, not secrets.
_SECRET_KEY = re.compile(
    r"^(key|password|passwd|pwd|secret|token|api_?key|access_?key|secret_?key|private_?key|"
    r"auth|credentials?|.*_(password|secret|token|api_?key|access_?key|secret_?key))$",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.match(str(key).rsplit(".", 1)[-1]))


def mask_secrets(value: Any) -> Any:
    """A copy of a plain container with every secret-looking key's value replaced by ``***``."""
    if isinstance(value, dict):
        return {
            k: (MASK if is_secret_key(k) and v is not None else mask_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def mask_override(line: str) -> str:
    """``db.password=hunter2`` -> ``db.password=***``; other overrides unchanged."""
    key, sep, _ = line.partition("=")
    return f"{key}{sep}{MASK}" if sep and is_secret_key(key.lstrip("+~")) else line
