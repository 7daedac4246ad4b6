"""Small-budget search aids: path features, predictor-ranked local search, ParEGO."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from nas_plugin.pareto import hypervolume
from nas_plugin.predictors import Predictor, PredictorError
from nas_plugin.predictors.features import PathFeatures
from nas_plugin.space import SearchSpace, nb201
from nas_plugin.strategies import (
    NSGA2,
    STRATEGIES,
    BayesianOptimization,
    LocalSearch,
    ParEGO,
    StrategyError,
    make_strategy,
)
from nas_plugin.testing.strategy_suite import StrategyContract, small_space

CONF = Path(__file__).resolve().parents[1] / "conf" / "plugin" / "hydra" / "sweeper" / "strategy"


class TestLocalSearchRankedByGP(StrategyContract):
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: LocalSearch(space, seed=seed, start_samples=3, rank_by="gp")


class TestParEGOAsSingleObjective(StrategyContract):
    # The suite tells floats: ParEGO takes one as a single objective.
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: ParEGO(space, seed=seed, initial_samples=4)


def _cell(ops: list[str]):
    space = nb201.search_space()
    return space, space.encode(
        {f"{nb201.DEFAULT_PREFIX}.{key}": op for key, op in zip(nb201.EDGE_KEYS, ops, strict=True)}
    )


def test_path_features_mark_the_live_paths_of_a_cell():
    # Edges in order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2; node 2 is dead (3<-2 is none).
    space, cell = _cell(
        ["nor_conv_3x3", "skip_connect", "nor_conv_1x1", "none", "avg_pool_3x3", "none"]
    )
    features = PathFeatures(space)
    row = features.transform([cell])[0]
    assert features.width == 4 + 16 + 64
    assert row.sum() == 1  # one live path: 0 -conv3x3-> 1 -avg_pool-> 3
    # The same function through other dead edges: the same vector.
    _, twin = _cell(
        ["nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "none", "avg_pool_3x3", "none"]
    )
    assert (features.transform([twin])[0] == row).all()
    both = PathFeatures(space, with_onehot=True)
    assert both.width == 84 + 30 and both.transform([cell])[0].sum() == 1 + 6


def test_path_features_need_a_cell_space():
    with pytest.raises(PredictorError, match="features='path': path features need a cell"):
        Predictor(small_space(), features="path")
    with pytest.raises(StrategyError, match="strategy 'bo': features='path': path features"):
        make_strategy({"name": "bo", "features": "path"}, small_space(), seed=0)
    with pytest.raises(StrategyError, match="rank_by='forest' is unknown"):
        make_strategy({"name": "local_search", "rank_by": "forest"}, small_space(), seed=0)


def test_bo_with_path_features_proposes_cells():
    space = nb201.search_space()
    strategy = BayesianOptimization(space, seed=0, initial_samples=3, features="path")
    for _ in range(8):
        candidate = strategy.ask()
        ops = [v for _, v in candidate]
        strategy.tell(candidate, float(ops.count("nor_conv_3x3")))
    assert len({e for e, _ in strategy.history}) == 8


def test_ranked_local_search_tries_the_predicted_best_neighbour_first():
    space = SearchSpace.from_dict({"x": list(range(6)), "y": [0, 1], "z": [0, 1]})
    strategy = LocalSearch(space, seed=0, start_samples=5, rank_by="gp")
    for _ in range(5):
        candidate = strategy.ask()
        strategy.tell(candidate, float(dict(candidate)["x"] + 3 * dict(candidate)["y"]))
    first = strategy.ask()  # the climb starts from the best of the five
    neighbours = [n for n in space.neighbours(strategy._current) if n not in strategy.scores]
    predicted, _ = strategy.predictor.predict(neighbours)
    assert first == neighbours[int(np.argmax(predicted))]
    second = strategy.ask()
    assert predicted[neighbours.index(second)] == sorted(predicted)[-2]


def _two_objectives(encoding) -> tuple[float, float]:
    values = [value for _, value in encoding]
    return float(values.count("a")), float(values.count("b"))


def _mo_space() -> SearchSpace:
    return SearchSpace.from_dict({f"d{i}": ["a", "b", "c", "d"] for i in range(8)})


def _found_hypervolume(strategy, budget: int) -> float:
    found = []
    for _ in range(budget):
        candidate = strategy.ask()
        score = _two_objectives(candidate)
        strategy.tell(candidate, score)
        found.append(score)
    return hypervolume(found, (0.0, 0.0))


def test_parego_spreads_along_the_front_better_than_nsga2_at_a_small_budget():
    # The true front is n_a + n_b = 8: hypervolume 8 + 7 + ... + 1 = 36.
    parego = [_found_hypervolume(ParEGO(_mo_space(), seed=s), 40) for s in range(3)]
    nsga2 = [_found_hypervolume(NSGA2(_mo_space(), seed=s), 40) for s in range(3)]
    assert statistics.mean(parego) > statistics.mean(nsga2)
    assert min(parego) >= 27  # three quarters of the true front's


def test_parego_front_and_failures():
    strategy = ParEGO(_mo_space(), seed=0, initial_samples=3)
    for i in range(12):
        candidate = strategy.ask()
        strategy.tell(candidate, None if i % 4 == 3 else _two_objectives(candidate))
    front = strategy.front()
    assert front and all(score is not None for _, score in front)
    assert sum(score is None for _, score in strategy.history) == 3
    with pytest.raises(StrategyError, match="same number"):
        strategy.tell(strategy.ask(), (1.0, 2.0, 3.0))
    with pytest.raises(StrategyError, match="rho=-1 must be a number >= 0"):
        make_strategy({"name": "parego", "rho": -1}, _mo_space(), seed=0)


@pytest.mark.parametrize("name", ["parego", "bo", "local_search"])
def test_shipped_config_builds_the_strategy_with_its_defaults(name):
    config = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    strategy = make_strategy(config, small_space() if name != "parego" else _mo_space(), seed=0)
    assert type(strategy) is STRATEGIES[name]
    assert np.isfinite(len(strategy.history))
