"""A fixed-length numeric vector for every encoding of a search space (surrogates' input)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nas_plugin.space import Categorical, Encoding, FloatRange, IntRange, SearchSpace


class OneHotFeatures:
    """A fixed-length numeric vector for every encoding of a space.

    Categorical decisions become one column per choice (all zero while inactive); integer and
    float decisions become one column scaled to [0, 1] (on a log scale for log intervals), and,
    when they are conditional, a second column that is 1 while they are active.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.columns: dict[str, int] = {}  # parameter -> its first column
        self._choice_index: dict[str, dict[object, int]] = {}
        width = 0
        for param in space.params:
            self.columns[param.name] = width
            if isinstance(param, Categorical):
                self._choice_index[param.name] = {v: i for i, v in enumerate(param.choices)}
                width += len(param.choices)
            else:
                width += 1 if param.condition is None else 2
        self.width = width
        self._params = {param.name: param for param in space.params}

    def transform(self, encodings: Sequence[Encoding]) -> np.ndarray:
        features = np.zeros((len(encodings), self.width))
        for row, encoding in enumerate(encodings):
            for key, value in encoding:
                column = self.columns[key]
                param = self._params[key]
                if isinstance(param, Categorical):
                    features[row, column + self._choice_index[key][value]] = 1.0
                    continue
                features[row, column] = _scaled(param, value)
                if param.condition is not None:
                    features[row, column + 1] = 1.0
        return features


def _scaled(param: IntRange | FloatRange, value: float) -> float:
    low, high = float(param.low), float(param.high)
    if isinstance(param, FloatRange) and param.log:
        low, high, value = math.log(low), math.log(high), math.log(value)
    return 0.5 if high == low else (value - low) / (high - low)
