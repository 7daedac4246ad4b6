"""Search spaces: parameters over config keys and canonical candidate encodings (pure Python)."""

from nas_plugin.space.params import (
    Categorical,
    Condition,
    FloatRange,
    IntRange,
    Param,
    SearchSpaceError,
    parse_param,
)
from nas_plugin.space.space import Encoding, SearchSpace

__all__ = [
    "Categorical",
    "Condition",
    "Encoding",
    "FloatRange",
    "IntRange",
    "Param",
    "SearchSpace",
    "SearchSpaceError",
    "parse_param",
]
