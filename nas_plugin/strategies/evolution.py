"""Regularized (aging) evolution, as in AmoebaNet (Real et al., 2019).

Start from ``population_size`` random candidates. Then, for every new candidate: draw
``sample_size`` members of the population at random, take the best of them as the parent, and
mutate one of its decisions. Each finished child joins the population and the **oldest** member
leaves, however good it is; this ageing keeps the search from clinging to lucky early scores.
Failed candidates never join the population.
"""

from __future__ import annotations

from collections import deque

from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.strategies.base import Strategy, StrategyError, positive_int, sample_unproposed


class RegularizedEvolution(Strategy):
    name = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        population_size: int = 20,
        sample_size: int = 5,
        max_resamples: int = 100,
    ) -> None:
        super().__init__(space, seed)
        self.population_size = positive_int(self.name, "population_size", population_size)
        self.sample_size = positive_int(self.name, "sample_size", sample_size)
        if self.sample_size > self.population_size:
            raise StrategyError(
                f"strategy 'evolution': sample_size={sample_size} > population_size="
                f"{population_size}; sample_size must be <= population_size"
            )
        self.max_resamples = positive_int(self.name, "max_resamples", max_resamples)
        self.population: deque[tuple[Encoding, float]] = deque()
        self._proposed: set[Encoding] = set()

    def ask(self) -> Encoding | None:
        for _ in range(self.max_resamples):
            candidate = self._propose()
            if candidate not in self._proposed:
                self._proposed.add(candidate)
                return candidate
        # Every mutation tried was proposed before (the parents' neighbourhoods are used up,
        # e.g. when a pre-screen asks for many candidates per trial): a fresh random candidate
        # keeps the search going instead of ending it early.
        candidate = sample_unproposed(self.space, self.rng, self._proposed, self.max_resamples)
        if candidate is not None:
            self._proposed.add(candidate)
        return candidate

    def _propose(self) -> Encoding:
        if len(self._proposed) < self.population_size or not self.population:
            return self.space.sample(self.rng)
        members = list(self.population)
        tournament = self.rng.sample(members, min(self.sample_size, len(members)))
        parent, _ = max(tournament, key=lambda member: member[1])
        return self.space.mutate(parent, self.rng)

    def tell(self, encoding: Encoding, score: float | None) -> None:
        super().tell(encoding, score)
        self._proposed.add(encoding)
        if score is None:
            return
        self.population.append((encoding, score))
        if len(self.population) > self.population_size:
            self.population.popleft()
