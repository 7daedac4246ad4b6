"""``hyperband``: successive halving over a budget key (Li et al., 2018).

Many candidates are trained with a small budget (epochs by default); the best ``1/eta`` of each
rung are promoted and trained again with ``eta`` times the budget, up to ``max_budget``. Hyperband
cycles through brackets that trade the number of candidates against their starting budget; with
``brackets: 1`` it is plain successive halving. Every rung's trials are ordinary trials (a Hydra
job and an MLflow run each), logged with their budget.

This module only computes the schedule and who is promoted; the sweeper launches the trials.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from nas_plugin.estimators.base import Estimator, EstimatorError, reject_unknown


@dataclass(frozen=True)
class Rung:
    candidates: int  # how many candidates this rung trains
    budget: float  # with this budget each


class Hyperband(Estimator):
    name = "hyperband"

    def __init__(
        self,
        budget_key: str = "train.epochs",
        min_budget: float = 1,
        max_budget: float = 9,
        eta: int = 3,
        brackets: int | None = None,
        integer_budget: bool = True,
    ) -> None:
        self.budget_key = budget_key
        self.min_budget, self.max_budget = min_budget, max_budget
        self.eta, self.integer_budget = eta, integer_budget
        self._validate(brackets)
        # s_max + 1 brackets in full Hyperband: s_max = floor(log_eta(max / min)).
        self.s_max = int(math.floor(math.log(max_budget / min_budget, eta) + 1e-9))
        self.brackets = self.s_max + 1 if brackets is None else min(brackets, self.s_max + 1)

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> Hyperband:
        allowed = ["budget_key", "min_budget", "max_budget", "eta", "brackets", "integer_budget"]
        reject_unknown(cls.name, options, allowed)
        return cls(**options)

    def _validate(self, brackets: int | None) -> None:
        where = "estimator 'hyperband'"
        if not isinstance(self.budget_key, str) or not self.budget_key:
            raise EstimatorError(f"{where}: budget_key={self.budget_key!r} must name a config key")
        for key in ("min_budget", "max_budget"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise EstimatorError(f"{where}: {key}={value!r} must be a number > 0")
        if self.min_budget > self.max_budget:
            raise EstimatorError(
                f"{where}: min_budget={self.min_budget} > max_budget={self.max_budget}"
            )
        if isinstance(self.eta, bool) or not isinstance(self.eta, int) or self.eta < 2:
            raise EstimatorError(f"{where}: eta={self.eta!r} must be an integer >= 2")
        if brackets is not None and (
            isinstance(brackets, bool) or not isinstance(brackets, int) or brackets < 1
        ):
            raise EstimatorError(f"{where}: brackets={brackets!r} must be a positive integer")

    def config_keys(self) -> list[str]:
        return [self.budget_key]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "budget_key": self.budget_key,
            "min_budget": self.min_budget,
            "max_budget": self.max_budget,
            "eta": self.eta,
            "brackets": self.brackets,
        }

    def bracket(self, index: int) -> list[Rung]:
        """The rungs of bracket ``index`` (0 = most candidates at the smallest budget)."""
        s = self.s_max - index % self.brackets
        first = math.ceil((self.s_max + 1) / (s + 1) * self.eta**s)
        rungs = []
        for i in range(s + 1):
            budget = self.max_budget * self.eta ** (i - s)
            if self.integer_budget:
                budget = max(1, round(budget))
            rungs.append(Rung(max(1, math.floor(first * self.eta**-i)), budget))
        return rungs

    def cycle(self) -> Iterator[tuple[int, list[Rung]]]:
        """Brackets in Hyperband's order, repeated until the sweep's trial budget is spent."""
        index = 0
        while True:
            yield index % self.brackets, self.bracket(index)
            index += 1


def promote(scores: list[tuple[Any, float | None]], count: int) -> list[Any]:
    """The ``count`` best candidates of a rung (failures never), best first; ties keep order."""
    done = [(i, c, s) for i, (c, s) in enumerate(scores) if s is not None]
    done.sort(key=lambda item: (-item[2], item[0]))
    return [candidate for _, candidate, _ in done[:count]]
