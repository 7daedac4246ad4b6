"""Strategies: the shared contract, config validation, and search quality on a toy objective."""

import statistics

import pytest

from nas_plugin.space import SearchSpace
from nas_plugin.strategies import (
    GridSearch,
    RandomSearch,
    RegularizedEvolution,
    StrategyError,
    make_strategy,
)
from nas_plugin.testing.strategy_suite import StrategyContract


class TestRandomSearch(StrategyContract):
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: RandomSearch(space, seed=seed)


class TestGridSearch(StrategyContract):
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: GridSearch(space, seed=seed, shuffle=True)


class TestRegularizedEvolution(StrategyContract):
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: RegularizedEvolution(
            space, seed=seed, population_size=5, sample_size=2
        )


def test_grid_visits_every_candidate_once_in_order():
    space = SearchSpace.from_dict({"a": [1, 2], "b": {"low": 0, "high": 2}})
    strategy = GridSearch(space)
    asked = []
    while (candidate := strategy.ask()) is not None:
        asked.append(space.decode(candidate))
    assert asked == [{"a": a, "b": b} for a in (1, 2) for b in (0, 1, 2)]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "annealing"}, "strategy.name='annealing' is unknown; allowed: ["),
        ({"name": "evolution", "popsize": 4}, "unknown option(s) ['popsize']; allowed: "),
        ({"name": "evolution", "population_size": 0}, "population_size=0 must be a positive"),
        ({"name": "evolution", "population_size": 3, "sample_size": 5}, "sample_size=5 >"),
        ({"name": "grid", "float_points": -1}, "float_points=-1 must be a positive integer"),
    ],
)
def test_bad_strategy_config_names_the_option(config, message):
    space = SearchSpace.from_dict({"a": [1, 2]})
    with pytest.raises(StrategyError) as err:
        make_strategy(config, space, seed=0)
    assert message in str(err.value)


def _needle_space_and_score():
    """12 decisions of 4 options (16.7M candidates); score = matches with a hidden target."""
    space = SearchSpace.from_dict({f"op{i}": ["a", "b", "c", "d"] for i in range(12)})
    target = {f"op{i}": "abcd"[(i * 7) % 4] for i in range(12)}

    def score(decoded: dict) -> float:
        return float(sum(decoded[k] == v for k, v in target.items()))

    return space, score


def _best_after(strategy, score, budget: int) -> float:
    best = float("-inf")
    for _ in range(budget):
        candidate = strategy.ask()
        value = score(strategy.space.decode(candidate))
        strategy.tell(candidate, value)
        best = max(best, value)
    return best


def test_evolution_finds_better_candidates_than_random_search():
    space, score = _needle_space_and_score()
    evolution = [
        _best_after(
            RegularizedEvolution(space, seed=s, population_size=20, sample_size=5), score, 300
        )
        for s in range(8)
    ]
    randoms = [_best_after(RandomSearch(space, seed=s), score, 300) for s in range(8)]
    assert statistics.mean(evolution) > statistics.mean(randoms) + 1.5
    assert min(evolution) >= statistics.median(randoms)


def test_evolution_removes_the_oldest_member_not_the_worst():
    space = SearchSpace.from_dict({"a": list(range(10))})
    strategy = RegularizedEvolution(space, seed=0, population_size=3, sample_size=2)
    scores = {0: 9.0, 1: 1.0, 2: 2.0, 3: 0.5}
    for value in range(4):
        encoding = space.encode({"a": value})
        strategy.tell(encoding, scores[value])
    assert [dict(e)["a"] for e, _ in strategy.population] == [1, 2, 3]


def test_evolution_never_adds_failed_candidates_to_the_population():
    space = SearchSpace.from_dict({"a": list(range(10))})
    strategy = RegularizedEvolution(space, seed=0, population_size=3, sample_size=2)
    strategy.tell(space.encode({"a": 1}), None)
    strategy.tell(space.encode({"a": 2}), 1.0)
    assert [dict(e)["a"] for e, _ in strategy.population] == [2]
    assert len(strategy.history) == 2


def test_random_search_samples_each_choice_roughly_uniformly():
    space = SearchSpace.from_dict({"a": [1, 2, 3, 4], "b": {"low": 0, "high": 9999}})
    strategy = RandomSearch(space, seed=0)
    counts = {1: 0, 2: 0, 3: 0, 4: 0}
    for _ in range(2000):
        counts[dict(strategy.ask())["a"]] += 1
    assert all(400 < c < 600 for c in counts.values())


def test_evolution_keeps_proposing_when_its_parents_neighbourhoods_are_used_up():
    # A pre-screen asks for many candidates per trained one: the parents stay the same while
    # their one-decision neighbourhoods run out. The search must go on, not report exhaustion.
    space = SearchSpace.from_dict({"a": list(range(10)), "b": list(range(10))})
    strategy = RegularizedEvolution(
        space, seed=0, population_size=3, sample_size=3, max_resamples=20
    )
    for _ in range(3):
        candidate = strategy.ask()
        strategy.tell(candidate, float(sum(v for _, v in candidate)))
    proposed = [strategy.ask() for _ in range(80)]
    assert None not in proposed
    assert len(set(proposed)) == 80
