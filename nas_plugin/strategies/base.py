"""The one interface every search strategy implements: ask for a candidate, tell its score.

A strategy sees encodings and numbers only, never torch, Hydra or MLflow, so it runs in
milliseconds in tests and can be reused outside Hydra. Scores are "higher is better" (the sweeper
negates a metric that is minimised); a failed trial is told as ``None``. A multi-objective
strategy (``multi_objective = True``) is told a tuple of such scores, one per objective.
"""

from __future__ import annotations

import inspect
import math
import random
from abc import ABC, abstractmethod
from typing import Any

from nas_plugin.space import Encoding, SearchSpace

# One float, or one per objective for a multi-objective strategy; always higher is better.
Score = float | tuple[float, ...]


class StrategyError(ValueError):
    """An invalid strategy config: the message names the key, the value and what is allowed."""


class Strategy(ABC):
    """Base class: subclasses implement :meth:`ask` and usually :meth:`tell`."""

    #: the name used in config (``hydra/sweeper/strategy=<name>``)
    name: str = ""
    #: told a tuple of scores (one per objective) instead of one float
    multi_objective: bool = False

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.rng = random.Random(seed)
        self.history: list[tuple[Encoding, Score | None]] = []

    @abstractmethod
    def ask(self) -> Encoding | None:
        """The next candidate to evaluate, or ``None`` once the strategy has nothing new."""

    def tell(self, encoding: Encoding, score: Score | None) -> None:
        """Report a finished candidate: its score (higher is better) or ``None`` if it failed."""
        self.history.append((encoding, score))

    def best(self) -> tuple[Encoding, float] | None:
        """The best single-objective result told so far."""
        scored = [(e, s) for e, s in self.history if isinstance(s, int | float)]
        return max(scored, key=lambda pair: pair[1]) if scored else None


def check_options(cls: type[Strategy], options: dict[str, Any]) -> None:
    """Reject option names the strategy's constructor does not take, before any trial runs."""
    allowed = [
        param.name
        for param in inspect.signature(cls.__init__).parameters.values()
        if param.name not in ("self", "space", "seed") and param.kind != param.VAR_KEYWORD
    ]
    # Options a family of strategies shares through **options (one-shot: SearchOptions).
    allowed += list(getattr(cls, "shared_options", ()))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise StrategyError(
            f"strategy '{cls.name}': unknown option(s) {unknown}; allowed: {allowed}"
        )


def positive_int(strategy: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StrategyError(f"strategy '{strategy}': {key}={value!r} must be a positive integer")
    return value


def sample_unproposed(
    space: SearchSpace, rng: random.Random, proposed: set[Encoding], tries: int
) -> Encoding | None:
    """A random candidate not in ``proposed``, or None when ``tries`` draws all were (the space
    is taken as exhausted)."""
    for _ in range(tries):
        candidate = space.sample(rng)
        if candidate not in proposed:
            return candidate
    return None


class ObjectiveVectors:
    """A multi-objective strategy's scores as tuples of floats, all as long as the first one
    told; a NaN or infinite value cannot be ranked, so such a score counts as a failure."""

    def __init__(self, strategy: str) -> None:
        self.strategy = strategy
        self.count: int | None = None

    def parse(self, score: Score | None) -> tuple[float, ...] | None:
        """``score`` as a tuple (None for a failed or unrankable one).

        Raises:
            StrategyError: a score with another number of objectives than the first.
        """
        if score is None:
            return None
        objectives = tuple(
            float(s) for s in (score if isinstance(score, tuple | list) else (score,))
        )
        if self.count is None:
            self.count = len(objectives)
        elif len(objectives) != self.count:
            raise StrategyError(
                f"strategy '{self.strategy}': told {len(objectives)} objective(s) after "
                f"{self.count}; every score must have the same number"
            )
        return objectives if all(math.isfinite(v) for v in objectives) else None
