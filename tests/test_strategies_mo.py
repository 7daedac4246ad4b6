"""REINFORCE and NSGA-II: the shared contract, their own contracts, and search quality on toys."""

import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from nas_plugin.pareto import dominates, hypervolume
from nas_plugin.space import SearchSpace
from nas_plugin.strategies import (
    NSGA2,
    STRATEGIES,
    RandomSearch,
    Reinforce,
    StrategyError,
    make_strategy,
)
from nas_plugin.testing.strategy_suite import StrategyContract, small_space

CONF = Path(__file__).resolve().parents[1] / "conf" / "plugin" / "hydra" / "sweeper" / "strategy"


class TestReinforce(StrategyContract):
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: Reinforce(space, seed=seed)


class TestNSGA2AsSingleObjective(StrategyContract):
    # The suite tells floats: NSGA-II takes one as a single objective.
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: NSGA2(space, seed=seed, population_size=4)


@pytest.mark.parametrize("name", ["reinforce", "nsga2"])
def test_shipped_config_builds_the_strategy_with_its_defaults(name):
    config = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    strategy = make_strategy(config, small_space(), seed=0)
    assert type(strategy) is STRATEGIES[name]
    defaults = {
        key: getattr(strategy, key) for key in config if key != "name" and hasattr(strategy, key)
    }
    assert defaults == {key: config[key] for key in defaults}


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "reinforce", "learning_rate": -1}, "learning_rate=-1 must be a number >= 0"),
        ({"name": "reinforce", "baseline_decay": 1.0}, "baseline_decay=1.0 must be in [0, 1)"),
        ({"name": "reinforce", "initial_std": 0}, "initial_std=0 must be in (0, 1]"),
        ({"name": "reinforce", "failure_reward": "low"}, "failure_reward='low' must be a number"),
        ({"name": "nsga2", "population_size": 1.5}, "population_size=1.5 must be a positive"),
        ({"name": "nsga2", "crossover_prob": 2}, "crossover_prob=2 must be a probability"),
    ],
)
def test_bad_option_names_the_option(config, message):
    with pytest.raises(StrategyError) as err:
        make_strategy(config, small_space(), seed=0)
    assert message in str(err.value)


# -- REINFORCE --------------------------------------------------------------------------------


def _needle_space_and_score():
    """12 decisions of 4 options (16.7M candidates); score = matches with a hidden target."""
    space = SearchSpace.from_dict({f"op{i}": ["a", "b", "c", "d"] for i in range(12)})
    target = {f"op{i}": "abcd"[(i * 7) % 4] for i in range(12)}

    def score(encoding) -> float:
        return float(sum(dict(encoding)[k] == v for k, v in target.items()))

    return space, score


def _best_after(strategy, score, budget: int) -> float:
    best = float("-inf")
    for _ in range(budget):
        candidate = strategy.ask()
        value = score(candidate)
        strategy.tell(candidate, value)
        best = max(best, value)
    return best


def test_reinforce_finds_better_candidates_than_random_search():
    space, score = _needle_space_and_score()
    reinforce = [_best_after(Reinforce(space, seed=s), score, 200) for s in range(6)]
    randoms = [_best_after(RandomSearch(space, seed=s), score, 200) for s in range(6)]
    assert statistics.mean(reinforce) > statistics.mean(randoms) + 2
    assert min(reinforce) > max(randoms)


def test_reinforce_policy_moves_towards_the_best_choice_and_float():
    space = SearchSpace.from_dict(
        {"op": ["a", "b", "c"], "lr": {"low": 1e-4, "high": 1.0, "log": True}}
    )
    strategy = Reinforce(space, seed=0)
    for _ in range(60):
        candidate = strategy.ask()
        values = dict(candidate)
        # Best: op "c" and lr = 1e-2 (the middle of the log interval is 1e-2).
        strategy.tell(candidate, float(values["op"] == "c") - abs(np.log10(values["lr"]) + 2))
    assert max(strategy.probabilities("op").items(), key=lambda kv: kv[1])[0] == "c"
    assert strategy.probabilities("op")["c"] > 0.6
    mean, _ = strategy.gaussians["lr"]
    assert abs(mean - 0.5) < 0.15


def test_reinforce_learns_nothing_from_a_failure_unless_it_is_penalised():
    space = SearchSpace.from_dict({"op": ["a", "b"]})
    a = space.encode({"op": "a"})
    quiet = Reinforce(space, seed=0)
    quiet.tell(space.encode({"op": "b"}), 1.0)
    quiet.tell(a, None)
    assert quiet.probabilities("op") == {"a": 0.5, "b": 0.5}
    penalised = Reinforce(space, seed=0, failure_reward=0.0)
    penalised.tell(space.encode({"op": "b"}), 1.0)
    penalised.tell(a, None)
    assert penalised.probabilities("op")["a"] < 0.5


def test_reinforce_refuses_a_tuple_of_scores():
    space = SearchSpace.from_dict({"op": ["a", "b"]})
    strategy = Reinforce(space)
    with pytest.raises(StrategyError, match="single-objective"):
        strategy.tell(strategy.ask(), (1.0, 2.0))


# -- NSGA-II: the multi-objective contract ----------------------------------------------------


def _two_objectives(encoding) -> tuple[float, float]:
    """Conflicting toy objectives: how many decisions are "a", and how many are "b"."""
    values = [value for _, value in encoding]
    return float(values.count("a")), float(values.count("b"))


def _mo_space() -> SearchSpace:
    # The true front is n_a + n_b = 10: its hypervolume above (0, 0) is 10 + 9 + ... + 1 = 55.
    return SearchSpace.from_dict({f"d{i}": ["a", "b", "c", "d"] for i in range(10)})


def _run_mo(strategy, budget: int, fail_every: int = 0) -> list:
    asked = []
    for i in range(budget):
        candidate = strategy.ask()
        if candidate is None:
            break
        asked.append(candidate)
        failed = fail_every and i % fail_every == fail_every - 1
        strategy.tell(candidate, None if failed else _two_objectives(candidate))
    return asked


def test_nsga2_same_seed_same_candidates():
    first = _run_mo(NSGA2(_mo_space(), seed=5, population_size=6), 60)
    second = _run_mo(NSGA2(_mo_space(), seed=5, population_size=6), 60)
    assert first == second
    assert first != _run_mo(NSGA2(_mo_space(), seed=6, population_size=6), 60)


def test_nsga2_goes_on_through_failures_and_a_generation_of_only_failures():
    strategy = NSGA2(_mo_space(), seed=0, population_size=5)
    asked = _run_mo(strategy, 10, fail_every=1)
    asked += _run_mo(strategy, 40, fail_every=3)
    assert len(asked) == len(set(asked)) == 50
    assert strategy.generation >= 8
    assert strategy.front()


def test_nsga2_batches_before_tells_are_distinct_and_evolve():
    strategy = NSGA2(_mo_space(), seed=1, population_size=5)
    asked = []
    for _ in range(8):
        batch = [strategy.ask() for _ in range(7)]
        # Told out of order, as parallel workers finish.
        for candidate in reversed(batch):
            strategy.tell(candidate, _two_objectives(candidate))
        asked += batch
    assert len(set(asked)) == len(asked) == 56
    assert strategy.generation >= 10


def test_nsga2_front_is_the_non_dominated_set_of_everything_told():
    strategy = NSGA2(_mo_space(), seed=2, population_size=6)
    asked = _run_mo(strategy, 80, fail_every=7)
    told = {e: s for e, s in strategy.history if s is not None}
    front = strategy.front()
    assert front
    for encoding, objectives in front:
        assert told[encoding] == objectives
        assert not any(dominates(other, objectives) for other in told.values())
    on_front = {e for e, _ in front}
    for encoding, objectives in told.items():
        if encoding not in on_front:
            assert any(dominates(o, objectives) for _, o in front)
    assert len(asked) == 80


def test_nsga2_population_is_elitist():
    strategy = NSGA2(_mo_space(), seed=3, population_size=6)
    _run_mo(strategy, 60)
    # Every member of the told front that fits is kept among the parents.
    front = {e for e, _ in strategy.front()}
    parents = {e for e, _ in strategy.population}
    assert len(front & parents) == min(len(front), strategy.population_size)


def test_nsga2_refuses_scores_with_a_changing_number_of_objectives():
    strategy = NSGA2(_mo_space(), seed=0)
    strategy.tell(strategy.ask(), (1.0, 2.0))
    with pytest.raises(StrategyError, match="same number"):
        strategy.tell(strategy.ask(), (1.0, 2.0, 3.0))
    assert len(strategy.history) == 1


def test_nsga2_finds_more_hypervolume_than_random_search():
    def found_hypervolume(strategy) -> float:
        found = [_two_objectives(e) for e in _run_mo(strategy, 150)]
        return hypervolume(found, (0.0, 0.0))

    nsga2 = [found_hypervolume(NSGA2(_mo_space(), seed=s)) for s in range(4)]
    randoms = [found_hypervolume(RandomSearch(_mo_space(), seed=s)) for s in range(4)]
    assert statistics.mean(nsga2) > statistics.mean(randoms) + 8
    assert min(nsga2) > max(randoms)
