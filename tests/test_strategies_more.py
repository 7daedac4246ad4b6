"""Local search and BO: the shared contract, option validation, search quality; the bench CLI."""

from __future__ import annotations

import json
import statistics
import sys

import pytest

from nas_plugin.cli import main, parse_options
from nas_plugin.predictors import OneHotFeatures
from nas_plugin.space import SearchSpace
from nas_plugin.strategies import (
    BayesianOptimization,
    LocalSearch,
    RandomSearch,
    StrategyError,
    make_strategy,
)
from nas_plugin.testing.strategy_suite import StrategyContract


class TestLocalSearch(StrategyContract):
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: LocalSearch(space, seed=seed, start_samples=3)


class TestBayesianOptimizationGP(StrategyContract):
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: BayesianOptimization(space, seed=seed, initial_samples=4)


class TestBayesianOptimizationMLP(StrategyContract):
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: BayesianOptimization(
            space,
            seed=seed,
            initial_samples=4,
            surrogate="mlp",
            ensemble_size=2,
            hidden_size=8,
            refit_every=5,
        )


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "local_search", "start_samples": 0}, "start_samples=0 must be a positive"),
        ({"name": "local_search", "restart_samples": 1.5}, "restart_samples=1.5 must be a pos"),
        ({"name": "local_search", "restarts": 2}, "unknown option(s) ['restarts']; allowed: "),
        ({"name": "bo", "surrogate": "forest"}, "surrogate='forest' is unknown; allowed: ['gp'"),
        ({"name": "bo", "acquisition": "pi"}, "acquisition='pi' is unknown; allowed: ['its'"),
        ({"name": "bo", "score_warp": "log"}, "score_warp='log' is unknown; allowed: ['rank'"),
        ({"name": "bo", "beta": -1}, "beta=-1 must be a number >= 0"),
        ({"name": "bo", "random_candidates": -1}, "random_candidates=-1 must be an integer >= 0"),
        ({"name": "bo", "refit_every": 0}, "refit_every=0 must be a positive integer"),
    ],
)
def test_bad_strategy_config_names_the_option(config, message):
    space = SearchSpace.from_dict({"a": [1, 2]})
    with pytest.raises(StrategyError) as err:
        make_strategy(config, space, seed=0)
    assert message in str(err.value)


def test_one_hot_features_cover_choices_numbers_and_conditions():
    space = SearchSpace.from_dict(
        {
            "family": ["a", "b"],
            "depth": {"low": 1, "high": 3, "when": {"family": "a"}},
            "lr": {"low": 1e-3, "high": 1e-1, "log": True},
        }
    )
    features = OneHotFeatures(space)
    rows = features.transform(
        [
            space.encode({"family": "a", "depth": 3, "lr": 1e-2}),
            space.encode({"family": "b", "lr": 1e-3}),
        ]
    )
    # family a | family b | depth (scaled) | depth active | lr (log-scaled)
    assert rows[0].tolist() == pytest.approx([1, 0, 1, 1, 0.5])
    assert rows[1].tolist() == pytest.approx([0, 1, 0, 0, 0])


def test_local_search_moves_to_a_better_neighbour_as_soon_as_it_is_told():
    space = SearchSpace.from_dict({"x": list(range(10)), "y": list(range(10))})
    strategy = LocalSearch(space, seed=0, start_samples=1)
    start = strategy.ask()
    strategy.tell(start, 0.0)
    neighbour = strategy.ask()
    assert sum(a != b for a, b in zip(start, neighbour, strict=True)) == 1
    strategy.tell(neighbour, 1.0)
    following = strategy.ask()
    assert sum(a != b for a, b in zip(neighbour, following, strict=True)) == 1


def test_local_search_restarts_at_a_local_optimum():
    space = SearchSpace.from_dict({"x": [0, 1, 2], "y": [0, 1, 2]})
    strategy = LocalSearch(space, seed=0, start_samples=1, restart_samples=1)
    start = strategy.ask()
    strategy.tell(start, 10.0)  # better than anything that follows: a local optimum
    neighbours = set(space.neighbours(start))
    for _ in neighbours:
        candidate = strategy.ask()
        assert candidate in neighbours
        strategy.tell(candidate, 0.0)
    restart = strategy.ask()
    assert restart is not None and restart not in neighbours | {start}


def _needle_space_and_score():
    """12 decisions of 4 options (16.7M candidates); score = matches with a hidden target."""
    space = SearchSpace.from_dict({f"op{i}": ["a", "b", "c", "d"] for i in range(12)})
    target = {f"op{i}": "abcd"[(i * 5) % 4] for i in range(12)}

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


@pytest.mark.parametrize(
    "build",
    [
        lambda space, seed: LocalSearch(space, seed=seed),
        lambda space, seed: BayesianOptimization(space, seed=seed),
    ],
    ids=["local_search", "bo"],
)
def test_finds_better_candidates_than_random_search(build):
    space, score = _needle_space_and_score()
    found = [_best_after(build(space, s), score, 100) for s in range(6)]
    randoms = [_best_after(RandomSearch(space, seed=s), score, 100) for s in range(6)]
    assert found == [12.0] * 6  # the known optimum, every time
    assert statistics.mean(randoms) < 9


def _table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_bench_cli_prints_one_row_per_strategy(capsys):
    assert main(["bench", "nb201", "--seeds", "2", "--queries", "30"]) == 0
    rows = _table_rows(capsys.readouterr().out)
    assert rows[0] == ["strategy", "@25", "@30", "ms/ask"]
    assert [row[0] for row in rows[2:]] == ["random", "evolution", "local_search", "bo", "tpe"]
    for row in rows[2:]:
        assert len(row) == 4
        mean, _, rest = row[1].partition(" ± ")
        std, median, p10 = (float(part) for part in rest.split(" · "))
        assert 80 < p10 <= median <= 94.38 and 80 < float(mean) <= 94.38 and std >= 0


def test_bench_cli_json_parses(capsys):
    argv = ["bench", "nb201", "--seeds", "2", "--queries", "30", "--json"]
    argv += ["--strategy", "local_search", "--strategy", "tpe", "--option", "start_samples=3"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["optimum"] == pytest.approx(94.373333)
    assert [row["strategy"] for row in result["rows"]] == ["local_search", "tpe"]
    assert result["rows"][0]["options"]["start_samples"] == 3
    for row in result["rows"]:
        assert set(row["best"]) == {"25", "30"}
        assert row["best"]["30"]["mean"] >= row["best"]["25"]["mean"]


def test_bench_cli_reports_bad_options(capsys):
    assert main(["bench", "nb201", "--strategy", "random", "--option", "start_samples=3"]) == 2
    assert "no selected strategy takes option 'start_samples'" in capsys.readouterr().err


def test_bench_cli_explains_a_missing_pareto_benchmark(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nas_plugin.bench.pareto_bench", None)
    assert main(["bench", "nb201", "--cost", "lat_ms_gold_6226", "--seeds", "1"]) == 2
    assert "--cost needs the multi-objective benchmark" in capsys.readouterr().err


def test_options_go_to_the_named_strategy_or_to_every_one_that_takes_them():
    options = parse_options(
        ["bo.parents=3", "float_points=4", "tpe.multivariate=true"], ["local_search", "bo", "tpe"]
    )
    assert options == {
        "bo": {"parents": 3, "float_points": 4},
        "local_search": {"float_points": 4},
        "tpe": {"multivariate": True},
    }
