"""The contract every strategy keeps, as a pytest class to subclass (like Optuna's sampler suite).

class TestMyStrategy(StrategyContract):
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: MyStrategy(space, seed=seed)
"""

from __future__ import annotations

import math

import pytest

from nas_plugin.space import SearchSpace
from nas_plugin.strategies.base import Strategy


def small_space() -> SearchSpace:
    return SearchSpace.from_dict(
        {
            "family": ["a", "b"],
            "depth": {"low": 1, "high": 3, "when": {"family": "a"}},
            "width": [8, 16],
            "lr": {"low": 1e-3, "high": 1e-1, "log": True},
        }
    )


def tiny_discrete_space() -> SearchSpace:
    return SearchSpace.from_dict({"x": [1, 2, 3], "y": [True, False]})


def synthetic_score(decoded: dict) -> float:
    """Deterministic toy objective: prefers family a, depth 3, width 16, lr 0.01, big x."""
    score = 1.0 if decoded.get("family") == "a" else 0.0
    score += decoded.get("depth", 0) * 0.5 + decoded.get("width", 0) / 16 + decoded.get("x", 0)
    return score - abs(math.log10(decoded.get("lr", 0.01)) + 2)


def run(strategy: Strategy, n: int, fail_every: int = 0) -> list:
    asked = []
    for i in range(n):
        candidate = strategy.ask()
        if candidate is None:
            break
        asked.append(candidate)
        failed = fail_every and i % fail_every == fail_every - 1
        score = None if failed else synthetic_score(strategy.space.decode(candidate))
        strategy.tell(candidate, score)
    return asked


class StrategyContract:
    """Override the ``make_strategy`` fixture: ``(space, seed) -> Strategy``."""

    @pytest.fixture
    def make_strategy(self):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def test_same_seed_same_candidates(self, make_strategy):
        first = run(make_strategy(small_space(), 7), 25)
        second = run(make_strategy(small_space(), 7), 25)
        assert first == second

    def test_candidates_are_canonical_members_of_the_space(self, make_strategy):
        space = small_space()
        for candidate in run(make_strategy(space, 1), 25):
            assert space.encode(space.decode(candidate)) == candidate

    def test_failures_are_accepted_and_the_search_goes_on(self, make_strategy):
        strategy = make_strategy(small_space(), 2)
        asked = run(strategy, 20, fail_every=2)
        assert len(asked) == 20
        assert sum(score is None for _, score in strategy.history) == 10

    def test_a_finite_space_runs_out_without_repeating(self, make_strategy):
        space = tiny_discrete_space()
        strategy = make_strategy(space, 3)
        asked = run(strategy, 50)
        assert len(asked) == len(set(asked)) <= space.size()
        assert strategy.ask() is None or len(asked) < space.size()

    def test_asking_a_batch_before_telling_gives_distinct_candidates(self, make_strategy):
        strategy = make_strategy(small_space(), 4)
        batch = [strategy.ask() for _ in range(6)]
        assert len(set(batch)) == 6
