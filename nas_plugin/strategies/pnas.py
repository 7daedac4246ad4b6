"""Progressive NAS (Liu et al., 2018): grow cells one block at a time, a surrogate picks which.

A cell's **blocks** are its decisions that differ from the space's null value: an edge that is
not ``none`` in the NB201 cell (the first choice of a categorical without ``none``, the lower
bound of a range elsewhere), so the NB201 cell has 1 to 6 blocks. The search:

1. Level 1: every cell of one block (the all-null cell with one decision changed; 24 on NB201,
   at most ``max_first_level`` of them, a seeded random subset beyond that) is asked.
2. Level b + 1: the ``beam_size`` best cells of level b (by their told scores) are expanded into
   all their children (one more block: a null decision set to each of its other values); the
   predictor (``nas_plugin.predictors``, refit on every result so far) ranks the children, and
   the ``beam_size`` best-ranked are asked. Up to ``max_blocks`` (default: every decision).
3. After the last level (or when no children are left) PNAS goes on as its last level did, one
   cell at a time: the predictor ranks the one-decision neighbours of the ``beam_size`` best cells
   so far, and the best-ranked new one is asked; random new cells once those run out.

A level is formed when the previous level's queue is used up, from the results told by then:
all of them when asks and tells alternate or a batch divides the level's size; with cells still
in flight, from those told (so the search never waits). The paper's surrogate is an LSTM/MLP
ensemble on the block sequence; here it is the project's GP or MLP ensemble on one-hot
features, fit to rank-warped scores. Ranking is by predicted mean (PNAS has no acquisition).
"""

from __future__ import annotations

from nas_plugin.predictors import Predictor
from nas_plugin.predictors.predictor import MODELS
from nas_plugin.predictors.surrogates import single_threaded_blas
from nas_plugin.space import Categorical, Encoding, SearchSpace
from nas_plugin.space.params import Param, Value
from nas_plugin.strategies.base import Strategy, StrategyError, positive_int, sample_unproposed

NULL_VALUE = "none"


class PNAS(Strategy):
    name = "pnas"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        beam_size: int = 8,
        max_blocks: int | None = None,
        max_first_level: int = 64,
        predictor: str = "gp",
        null_value: str = NULL_VALUE,
        float_points: int = 5,
        max_resamples: int = 1000,
    ) -> None:
        super().__init__(space, seed)
        self.beam_size = positive_int(self.name, "beam_size", beam_size)
        if max_blocks is not None:
            positive_int(self.name, "max_blocks", max_blocks)
        self.max_blocks = len(space) if max_blocks is None else min(max_blocks, len(space))
        self.max_first_level = positive_int(self.name, "max_first_level", max_first_level)
        if predictor not in MODELS:
            raise StrategyError(
                f"strategy 'pnas': predictor={predictor!r} is unknown; allowed: {list(MODELS)}"
            )
        self.null_value = null_value
        self.float_points = positive_int(self.name, "float_points", float_points)
        self.max_resamples = positive_int(self.name, "max_resamples", max_resamples)
        self.predictor = Predictor(
            space, seed, model=predictor, min_trials=2, rng=self.rng, where="hydra.sweeper.strategy"
        )
        # The level (= blocks) whose cells are being asked; 0: none formed yet.
        self.level = 0
        self._queue: list[Encoding] = []
        self._progressive = True  # False once the last level is formed
        self._proposed: set[Encoding] = set()

    # -- blocks ---------------------------------------------------------------------------------

    def _null(self, param: Param) -> Value:
        if isinstance(param, Categorical):
            return self.null_value if self.null_value in param.choices else param.choices[0]
        return param.low

    def blocks(self, encoding: Encoding) -> int:
        """How many of the cell's active decisions are not null."""
        return sum(value != self._null(self.space[key]) for key, value in encoding)

    def root(self) -> Encoding:
        """The cell of no blocks: every active decision null."""
        decided: dict[str, Value] = {}
        for param in self.space.params:
            if self.space.is_active(param, decided):
                decided[param.name] = self._null(param)
        return tuple(decided.items())

    def children(self, encoding: Encoding) -> list[Encoding]:
        """Every cell with one more block: one null decision set to each of its other values.

        (A decision such a change activates takes its first value; a child where that is not
        the null value has two more blocks and is left out.)"""
        grown = self.blocks(encoding) + 1
        return [
            c for c in self.space.neighbours(encoding, self.float_points) if self.blocks(c) == grown
        ]

    # -- ask ------------------------------------------------------------------------------------

    def ask(self) -> Encoding | None:
        while True:
            while self._queue:
                candidate = self._queue.pop(0)
                if candidate not in self._proposed:
                    self._proposed.add(candidate)
                    return candidate
            if not self._progressive or not self._next_level():
                break
        candidate = self._best_ranked(self._neighbourhood())
        if candidate is None:
            candidate = sample_unproposed(self.space, self.rng, self._proposed, self.max_resamples)
        if candidate is not None:
            self._proposed.add(candidate)
        return candidate

    def _next_level(self) -> bool:
        """Queue the next level's cells; False once there is none (the progressive phase ends)."""
        if self.level == 0:
            first = [c for c in self.children(self.root()) if c not in self._proposed]
            if len(first) > self.max_first_level:
                first = self.rng.sample(first, self.max_first_level)
            self.level, self._queue = 1, first
            return True
        if self.level >= self.max_blocks:
            self._progressive = False
            return False
        told = [e for e, _ in self.predictor.observed if self.blocks(e) == self.level]
        if not told:
            return False  # none of this level scored yet (in flight or failed): try again later
        kept = self._top(told)
        pool: dict[Encoding, None] = {}  # ordered, duplicate-free: the same seed, the same cells
        for parent in kept:
            for child in self.children(parent):
                if child not in self._proposed:
                    pool[child] = None
        if not pool:
            self._progressive = False
            return False
        self.level += 1
        self._queue = self._ranked(list(pool))[: self.beam_size]
        return True

    def _top(self, encodings: list[Encoding]) -> list[Encoding]:
        scores = self.predictor.scores
        return sorted(encodings, key=lambda e: -scores[e])[: self.beam_size]  # type: ignore[operator]

    def _ranked(self, pool: list[Encoding]) -> list[Encoding]:
        """``pool`` best first by the predictor's mean (in pool order until it can be fit)."""
        if len(pool) < 2 or len(self.predictor.observed) < 2:
            return pool
        with single_threaded_blas():
            mean, _ = self.predictor.predict(pool)
        order = sorted(range(len(pool)), key=lambda i: -mean[i])  # stable: ties keep pool order
        return [pool[i] for i in order]

    def _neighbourhood(self) -> list[Encoding]:
        best = self._top([e for e, _ in self.predictor.observed])
        pool: dict[Encoding, None] = {}
        for parent in best:
            for neighbour in self.space.neighbours(parent, self.float_points):
                if neighbour not in self._proposed:
                    pool[neighbour] = None
        return list(pool)

    def _best_ranked(self, pool: list[Encoding]) -> Encoding | None:
        ranked = self._ranked(pool)
        return ranked[0] if ranked else None

    # -- tell -----------------------------------------------------------------------------------

    def tell(self, encoding: Encoding, score: float | None) -> None:
        super().tell(encoding, score)
        self._proposed.add(encoding)
        self.predictor.add(encoding, score)
