"""NSGA-II (Deb et al., 2002): multi-objective evolution by non-dominated rank and crowding.

Told a tuple of scores per candidate (higher is better on each), it keeps a population of
``population_size`` parents:

- the first ``population_size`` candidates are random;
- every later candidate is a child: two binary tournaments pick two parents (lower
  non-dominated rank wins, then larger crowding distance, then a coin), uniform crossover takes
  each decision from one of them (a conditional decision that the mix activates comes from the
  parent that has it, or is sampled), and ``space.mutate`` changes one decision;
- once a generation's worth of candidates (``population_size``) has been told, parents and
  children are merged and the best ``population_size`` survive: whole fronts in rank order, and
  the last front that fits only partly by crowding distance (elitist, (mu + lambda)).

Generations are counted in tells, failed ones included, never in particular candidates, so
asking a batch before telling the previous one, or candidates that fail, never stall the
search: until the first population is in, asks are random. A single float score is taken as
one objective (a plain elitist genetic algorithm). ``front()`` is the non-dominated set of
everything told.
"""

from __future__ import annotations

import numpy as np

from nas_plugin.pareto import crowding_distance, non_dominated_sort, pareto_front
from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.strategies.base import (
    ObjectiveVectors,
    Score,
    Strategy,
    StrategyError,
    positive_int,
)


def _probability(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise StrategyError(f"strategy 'nsga2': {key}={value!r} must be a probability in [0, 1]")
    return float(value)


class NSGA2(Strategy):
    name = "nsga2"
    multi_objective = True

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        population_size: int = 10,
        crossover_prob: float = 0.5,
        mutation_prob: float = 1.0,
        max_resamples: int = 100,
    ) -> None:
        super().__init__(space, seed)
        self.population_size = positive_int(self.name, "population_size", population_size)
        self.crossover_prob = _probability("crossover_prob", crossover_prob)
        self.mutation_prob = _probability("mutation_prob", mutation_prob)
        self.max_resamples = positive_int(self.name, "max_resamples", max_resamples)
        # Parents, each with its objectives, rank and crowding distance within the population.
        self.population: list[tuple[Encoding, tuple[float, ...]]] = []
        self._rank: list[int] = []
        self._crowding: list[float] = []
        # Children told since the last survival, and how many tells (failures too) that was.
        self._offspring: list[tuple[Encoding, tuple[float, ...]]] = []
        self._told_in_generation = 0
        self._archive: dict[Encoding, tuple[float, ...]] = {}
        self._vectors = ObjectiveVectors("nsga2")
        self._proposed: set[Encoding] = set()
        self.generation = 0

    # -- asking -------------------------------------------------------------------------------

    def ask(self) -> Encoding | None:
        for _ in range(self.max_resamples):
            candidate = self._propose()
            if candidate not in self._proposed:
                self._proposed.add(candidate)
                return candidate
        return None

    def _propose(self) -> Encoding:
        if len(self._proposed) < self.population_size or len(self.population) < 2:
            return self.space.sample(self.rng)
        first, second = self._tournament(), self._tournament()
        if self.rng.random() < self.crossover_prob:
            child = self._crossover(first, second)
        else:
            child = first
        # Without a mutation an unchanged copy of a parent is a certain repeat.
        if child in self._proposed or self.rng.random() < self.mutation_prob:
            child = self.space.mutate(child, self.rng)
        return child

    def _tournament(self) -> Encoding:
        a, b = self.rng.sample(range(len(self.population)), 2)
        key_a = (-self._rank[a], self._crowding[a])
        key_b = (-self._rank[b], self._crowding[b])
        if key_a == key_b:
            winner = self.rng.choice((a, b))
        else:
            winner = a if key_a > key_b else b
        return self.population[winner][0]

    def _crossover(self, first: Encoding, second: Encoding) -> Encoding:
        """Uniform crossover; a decision the mix activates comes from whichever parent has it."""
        parents = (dict(first), dict(second))
        decided: dict = {}
        for param in self.space.params:
            if not self.space.is_active(param, decided):
                continue
            options = [p[param.name] for p in parents if param.name in p]
            if options:
                decided[param.name] = self.rng.choice(options)
            else:
                decided[param.name] = param.sample(self.rng)
        return self.space.encode(decided)

    # -- learning -----------------------------------------------------------------------------

    def tell(self, encoding: Encoding, score: Score | None) -> None:
        objectives = self._vectors.parse(score)  # first: a malformed score must leave no trace
        super().tell(encoding, score)
        self._proposed.add(encoding)
        if objectives is not None and encoding not in self._archive:
            self._archive[encoding] = objectives
            self._offspring.append((encoding, objectives))
        self._told_in_generation += 1
        if self._told_in_generation >= self.population_size:
            self._survive()

    def _survive(self) -> None:
        merged = self.population + self._offspring
        self._offspring = []
        self._told_in_generation = 0
        if not merged:
            return
        self.generation += 1
        points = np.array([objectives for _, objectives in merged])
        survivors: list[int] = []
        for front in non_dominated_sort(points):
            room = self.population_size - len(survivors)
            if room == 0:
                break
            if len(front) <= room:
                survivors.extend(front)
                continue
            distance = crowding_distance(points[front])
            # Stable sort: equal distances keep index order, so a seed gives one result.
            order = np.argsort(-distance, kind="stable")[:room]
            survivors.extend(front[i] for i in order)
            break
        self.population = [merged[i] for i in survivors]
        kept = points[survivors]
        self._rank = [0] * len(kept)
        self._crowding = [0.0] * len(kept)
        for rank, front in enumerate(non_dominated_sort(kept)):
            for i, distance in zip(front, crowding_distance(kept[front]), strict=True):
                self._rank[i] = rank
                self._crowding[i] = float(distance)

    # -- results ------------------------------------------------------------------------------

    def front(self) -> list[tuple[Encoding, tuple[float, ...]]]:
        """The non-dominated candidates among everything told, with their objectives."""
        told = list(self._archive.items())
        if not told:
            return []
        return [told[i] for i in pareto_front([objectives for _, objectives in told])]
