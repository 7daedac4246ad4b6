"""Local search: hill climbing over one-decision changes, restarted at every local optimum.

A climb starts from the best of ``start_samples`` random candidates. It then evaluates the
neighbours of the current candidate (every candidate that differs in one decision, in a seeded
random order) and moves to the first neighbour that scores better ("first improvement"), which
costs far fewer queries than scanning the whole neighbourhood at every step. When no neighbour is
better, the current candidate is a local optimum and a new climb starts from the best of
``restart_samples`` fresh random candidates. Any answer that beats the current candidate (also
one that arrives late, in a batch) becomes the current candidate. White et al. (2021) found this
simple scheme competitive on NAS-Bench-201; so does ``nas-plugin bench nb201``.

``rank_by``: with ``gp`` or ``mlp`` a predictor (``nas_plugin.predictors``, on ``features``)
learns every answer and the climb evaluates the neighbours in its order, most promising first,
and starts each climb from the best of ``restart_samples`` answered candidates as before; with
``none`` (the default) the order is random. Ranking costs a refit per ask (a GP: about a
millisecond on NB201) and usually finds the improving neighbour in fewer queries.

Float intervals contribute ``float_points`` grid values to the neighbourhood; conditional
parameters that a change activates take their first value (``SearchSpace.neighbours``).
Batches: while answers are outstanding the climb keeps proposing neighbours; once the
neighbourhood is used up but not fully answered, it proposes random candidates, which also serve
as starts of the next climb.
"""

from __future__ import annotations

import math

from nas_plugin.predictors import Predictor, PredictorError
from nas_plugin.predictors.features import FEATURES
from nas_plugin.predictors.surrogates import single_threaded_blas
from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.strategies.base import Strategy, StrategyError, positive_int, sample_unproposed

RANK_BY = ("none", "gp", "mlp")


class LocalSearch(Strategy):
    name = "local_search"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        start_samples: int = 10,
        restart_samples: int = 10,
        float_points: int = 5,
        max_resamples: int = 1000,
        rank_by: str = "none",
        features: str = "onehot",
    ) -> None:
        super().__init__(space, seed)
        if rank_by not in RANK_BY:
            raise StrategyError(
                f"strategy 'local_search': rank_by={rank_by!r} is unknown; allowed: {list(RANK_BY)}"
            )
        if features not in FEATURES:
            raise StrategyError(
                f"strategy 'local_search': features={features!r} is unknown; allowed: "
                f"{list(FEATURES)}"
            )
        self.rank_by = rank_by
        self.predictor: Predictor | None = None
        if rank_by != "none":
            try:
                self.predictor = Predictor(
                    space, seed, model=rank_by, min_trials=2, features=features
                )
            except PredictorError as err:
                raise StrategyError(f"strategy 'local_search': {err}") from None
        # Random candidates evaluated before the first climb; it starts from their best.
        self.start_samples = positive_int(self.name, "start_samples", start_samples)
        # Random candidates evaluated after a local optimum; the next climb starts from their best.
        self.restart_samples = positive_int(self.name, "restart_samples", restart_samples)
        self.float_points = positive_int(self.name, "float_points", float_points)
        # How often to redraw an already proposed random candidate before calling the space spent.
        self.max_resamples = positive_int(self.name, "max_resamples", max_resamples)
        self.scores: dict[Encoding, float | None] = {}
        self._proposed: set[Encoding] = set()
        self._current: Encoding | None = None
        self._neighbours: list[Encoding] = []  # still to propose, next one last
        self._climb_neighbours: frozenset[Encoding] = frozenset()
        # Random candidates drawn for the next climb's start, and how many it needs answered.
        self._starts: list[Encoding] = []
        self._starts_needed = self.start_samples
        self._exhausted = False

    # -- ask ------------------------------------------------------------------------------------

    def ask(self) -> Encoding | None:
        if self._exhausted:
            return None
        self._rank_neighbours()
        while self._neighbours:
            candidate = self._neighbours.pop()
            if candidate not in self._proposed:
                return self._propose(candidate)
        if self._current is not None and self._neighbourhood_answered():
            self._restart()  # a local optimum: nothing around it is better
        if self._current is None and self._start_ready():
            self._climb_from(self._best_start())
            return self.ask()
        # Waiting for answers, or collecting starts: a random candidate is useful either way.
        candidate = self._random_new()
        if candidate is None:
            candidate = self._any_unproposed_neighbour()
        if candidate is None:
            self._exhausted = True
            return None
        self._starts.append(candidate)
        return self._propose(candidate)

    def _propose(self, candidate: Encoding) -> Encoding:
        self._proposed.add(candidate)
        return candidate

    def _random_new(self) -> Encoding | None:
        return sample_unproposed(self.space, self.rng, self._proposed, self.max_resamples)

    def _any_unproposed_neighbour(self) -> Encoding | None:
        # Sampling rarely hits the last few members of a small space; the neighbourhoods of
        # everything proposed so far cover the rest of a connected space.
        for known in sorted(self._proposed, key=repr):
            for neighbour in self.space.neighbours(known, self.float_points):
                if neighbour not in self._proposed:
                    return neighbour
        return None

    # -- tell -----------------------------------------------------------------------------------

    def tell(self, encoding: Encoding, score: float | None) -> None:
        super().tell(encoding, score)
        if encoding not in self._proposed and self._current is None:
            # Told without being asked (a warm start): a start for the next climb, like a
            # random candidate of our own.
            self._starts.append(encoding)
        self._proposed.add(encoding)
        self.scores[encoding] = score
        if self.predictor is not None:
            self.predictor.add(encoding, score)
        if self._current is not None and self._better(encoding, self._current):
            self._climb_from(encoding)

    def _score(self, encoding: Encoding) -> float:
        score = self.scores.get(encoding)
        return -math.inf if score is None else score  # unanswered or failed

    def _better(self, candidate: Encoding, than: Encoding) -> bool:
        return self.scores.get(candidate) is not None and self._score(candidate) > self._score(than)

    # -- climbing -------------------------------------------------------------------------------

    def _climb_from(self, start: Encoding) -> None:
        """Make ``start`` the current candidate; jump on at once to known better neighbours."""
        while True:
            neighbours = self.space.neighbours(start, self.float_points)
            known_better = [n for n in neighbours if self._better(n, start)]
            if not known_better:
                break
            start = max(known_better, key=self._score)
        self._current = start
        self._climb_neighbours = frozenset(neighbours)
        self.rng.shuffle(neighbours)
        self._neighbours = neighbours

    def _rank_neighbours(self) -> None:
        """Reorder the neighbours still to propose by the predictor, most promising last (the
        next one popped)."""
        pending = [n for n in self._neighbours if n not in self._proposed]
        self._neighbours = pending
        if self.predictor is None or len(pending) < 2 or not self.predictor.ready:
            return
        with single_threaded_blas():
            mean, _ = self.predictor.predict(pending)
        order = sorted(range(len(pending)), key=lambda i: mean[i])  # stable: ties keep order
        self._neighbours = [pending[i] for i in order]

    def _neighbourhood_answered(self) -> bool:
        return all(n in self.scores for n in self._climb_neighbours)

    def _restart(self) -> None:
        self._current = None
        self._neighbours = []
        # Random candidates drawn while the climb waited for answers count as restart samples.
        self._starts_needed = self.restart_samples

    def _start_ready(self) -> bool:
        answered = [s for s in self._starts if s in self.scores]
        return len(answered) >= self._starts_needed and any(
            self.scores[s] is not None for s in answered
        )

    def _best_start(self) -> Encoding:
        answered = [s for s in self._starts if self.scores.get(s) is not None]
        best = max(answered, key=self._score)
        self._starts = [s for s in self._starts if s not in self.scores]
        return best
