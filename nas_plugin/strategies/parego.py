"""ParEGO (Knowles, 2006): multi-objective BO by a fresh random scalarisation at every ask.

Told a tuple of scores per candidate (higher is better on each), each ask:

1. draws a weight vector ``w`` uniformly from the simplex;
2. scales every objective of the results so far to [0, 1] (min to max seen) and scalarises
   them with the augmented Chebyshev function ``min_i w_i f_i + rho * sum_i w_i f_i``, which
   rewards a point on any part of the front that ``w`` points at (a weighted sum would only
   reach the convex hull);
3. runs one step of :class:`~nas_plugin.strategies.bo.BayesianOptimization` on those scalar
   scores: the surrogate (a GP by default) is fitted to them and the candidate pool (the
   neighbours and mutations of the best candidates under ``w``, plus random ones) is ranked by
   expected improvement.

Each weight pulls the search towards another part of the front, so a batch of asks spreads
along it. The first ``initial_samples`` candidates are random. A single float is taken as one
objective (plain BO). Failed candidates (``None``) are never proposed again and stay out of the
fit. ``front()`` is the non-dominated set of everything told. Every option of ``bo`` applies.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from nas_plugin.pareto import pareto_front
from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.strategies.base import ObjectiveVectors, Score, StrategyError
from nas_plugin.strategies.bo import BayesianOptimization


class ParEGO(BayesianOptimization):
    name = "parego"
    multi_objective = True

    def __init__(
        self, space: SearchSpace, seed: int = 0, rho: float = 0.05, **options: Any
    ) -> None:
        super().__init__(space, seed, **options)
        if isinstance(rho, bool) or not isinstance(rho, int | float) or rho < 0:
            raise StrategyError(f"strategy 'parego': rho={rho!r} must be a number >= 0")
        self.rho = float(rho)
        self._objectives: dict[Encoding, tuple[float, ...]] = {}
        self._vectors = ObjectiveVectors("parego")

    # Every option of bo passes through **options (check_options allows them by this list).
    shared_options = tuple(inspect.signature(BayesianOptimization.__init__).parameters)[3:]

    def ask(self) -> Encoding | None:
        if len(self._objectives) >= 2:
            self._scalarise()
        return super().ask()

    def _scalarise(self) -> None:
        """Rewrite the surrogate's scores under a fresh random weight (and refit it)."""
        encodings = list(self._objectives)
        values = np.array([self._objectives[e] for e in encodings])
        low, high = values.min(axis=0), values.max(axis=0)
        scaled = (values - low) / np.where(high > low, high - low, 1.0)
        weights = self._np_rng.dirichlet(np.ones(values.shape[1]))
        scalar = (scaled * weights).min(axis=1) + self.rho * (scaled * weights).sum(axis=1)
        for encoding, value in zip(encodings, scalar.tolist(), strict=True):
            self.scores[encoding] = value
        self.predictor.invalidate()

    def tell(self, encoding: Encoding, score: Score | None) -> None:
        objectives = self._vectors.parse(score)  # first: a malformed score must leave no trace
        self.history.append((encoding, score))
        self._proposed.add(encoding)
        if objectives is None:
            self.scores[encoding] = None
            self._objectives.pop(encoding, None)
            return
        self._objectives[encoding] = objectives
        # A placeholder until the next ask scalarises everything under its own weight.
        self.scores[encoding] = objectives[0]

    def best(self) -> tuple[Encoding, float] | None:
        return None  # no single best of several objectives: see front()

    def front(self) -> list[tuple[Encoding, tuple[float, ...]]]:
        """The non-dominated candidates among everything told, with their objectives."""
        told = list(self._objectives.items())
        if not told:
            return []
        return [told[i] for i in pareto_front([objectives for _, objectives in told])]
