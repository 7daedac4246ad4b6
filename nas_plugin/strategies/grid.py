"""Grid search: every candidate of a discrete space in order (float intervals get grid points)."""

from __future__ import annotations

import random

from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.strategies.base import Strategy, positive_int


class GridSearch(Strategy):
    name = "grid"

    def __init__(
        self, space: SearchSpace, seed: int = 0, float_points: int = 3, shuffle: bool = False
    ) -> None:
        super().__init__(space, seed)
        self.float_points = positive_int(self.name, "float_points", float_points)
        candidates = space.grid(self.float_points)
        if shuffle:
            # A budget smaller than the grid then covers it evenly instead of its first corner.
            shuffled = list(candidates)
            random.Random(seed).shuffle(shuffled)
            candidates = iter(shuffled)
        self._pending = candidates

    def ask(self) -> Encoding | None:
        return next(self._pending, None)
