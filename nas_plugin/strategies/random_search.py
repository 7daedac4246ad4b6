"""Random search: sample every decision uniformly; the baseline every NAS paper must beat."""

from __future__ import annotations

from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.strategies.base import Strategy, positive_int, sample_unproposed


class RandomSearch(Strategy):
    name = "random"

    def __init__(self, space: SearchSpace, seed: int = 0, max_resamples: int = 1000) -> None:
        super().__init__(space, seed)
        # How often to redraw a candidate already proposed before calling the space exhausted.
        self.max_resamples = positive_int(self.name, "max_resamples", max_resamples)
        self._proposed: set[Encoding] = set()

    def ask(self) -> Encoding | None:
        candidate = sample_unproposed(self.space, self.rng, self._proposed, self.max_resamples)
        if candidate is not None:
            self._proposed.add(candidate)
        return candidate
