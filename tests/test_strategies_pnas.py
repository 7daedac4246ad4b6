"""PNAS: the shared contract, its levels (blocks, beam, predictor ranking), options, the bench."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, run_app_in_process

from nas_plugin.cli import main
from nas_plugin.space import nb201
from nas_plugin.strategies import PNAS, StrategyError, make_strategy
from nas_plugin.testing.strategy_suite import StrategyContract, small_space


class TestPNAS(StrategyContract):
    @pytest.fixture
    def make_strategy(self):
        return lambda space, seed: PNAS(space, seed=seed, beam_size=3)


def _score(strategy: PNAS, encoding) -> float:
    """Toy objective on the NB201 cell: 3x3 convs are good, pools bad, later edges count more."""
    worth = {"none": 0.0, "skip_connect": 0.3, "nor_conv_1x1": 0.6, "nor_conv_3x3": 1.0}
    worth["avg_pool_3x3"] = 0.1
    return sum(worth[op] * (1 + i / 10) for i, (_, op) in enumerate(encoding))


def test_levels_grow_one_block_from_the_best_cells_ranked_by_the_predictor():
    space = nb201.search_space()
    strategy = PNAS(space, seed=0, beam_size=4)
    first = [strategy.ask() for _ in range(24)]
    # Level 1: every cell with exactly one non-none edge (6 edges x 4 operations), no repeats.
    assert len(set(first)) == 24 and {strategy.blocks(c) for c in first} == {1}
    for cell in first:
        strategy.tell(cell, _score(strategy, cell))
    kept = sorted(first, key=lambda c: -_score(strategy, c))[:4]
    children = {child for parent in kept for child in strategy.children(parent)}
    second = [strategy.ask() for _ in range(4)]
    # Level 2: the predictor's 4 best-ranked children of the 4 best level-1 cells.
    assert set(second) <= children and {strategy.blocks(c) for c in second} == {2}
    mean, _ = strategy.predictor.predict(sorted(children))
    ranked = [c for _, c in sorted(zip(-mean, sorted(children), strict=True))]
    assert set(second) == set(ranked[:4])
    for cell in second:
        strategy.tell(cell, _score(strategy, cell))
    for level in range(3, 7):
        batch = [strategy.ask() for _ in range(4)]
        assert {strategy.blocks(c) for c in batch} == {level}
        for cell in batch:
            strategy.tell(cell, _score(strategy, cell))
    # Past the last level (6 blocks) it goes on: neighbours of the best cells, never repeated.
    best_possible = space.encode({f"model.cell.{k}": "nor_conv_3x3" for k in nb201.EDGE_KEYS})
    asked = set(first + second)
    for _ in range(20):
        cell = strategy.ask()
        assert cell not in asked
        asked.add(cell)
        strategy.tell(cell, _score(strategy, cell))
    assert strategy.best()[0] == best_possible


def test_a_level_is_formed_from_what_was_told_while_cells_are_in_flight():
    strategy = PNAS(small_space(), seed=0, beam_size=2)
    pending = [strategy.ask() for _ in range(40)]  # far more than level 1 holds, none told
    assert None not in pending and len(set(pending)) == 40


@pytest.mark.parametrize(
    "config, message",
    [
        ({"beam_size": 0}, "strategy 'pnas': beam_size=0 must be a positive integer"),
        ({"max_blocks": -1}, "strategy 'pnas': max_blocks=-1 must be a positive integer"),
        ({"predictor": "lstm"}, "predictor='lstm' is unknown; allowed: ['gp', 'mlp']"),
        ({"beam": 4}, "unknown option(s) ['beam']; allowed: ['beam_size', 'max_blocks'"),
    ],
)
def test_bad_options_name_the_option(config, message):
    with pytest.raises(StrategyError) as err:
        make_strategy({"name": "pnas", **config}, nb201.search_space(), seed=0)
    assert message in str(err.value)


def test_bench_cli_runs_pnas_beside_random(capsys):
    argv = ["bench", "nb201", "--seeds", "2", "--queries", "40", "--checkpoints", "25,40"]
    assert main([*argv, "--strategy", "pnas", "--strategy", "random", "--json"]) == 0
    rows = {row["strategy"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert set(rows) == {"pnas", "random"}
    assert rows["pnas"]["options"]["beam_size"] == 8  # the shipped config group's defaults
    assert 85 < rows["pnas"]["best"]["40"]["mean"] <= 94.38


@pytest.mark.e2e
def test_pnas_sweep_through_the_sweeper_reaches_level_two(tmp_path: Path) -> None:
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/strategy=pnas",
        "hydra.sweeper.strategy.beam_size=2",
        "hydra.sweeper.strategy.max_first_level=4",
        "hydra.sweeper.n_trials=6",
    )
    assert result.proc.returncode == 0, result.output
    parent, trials = result.runs("nas-nb201-tabular")
    assert parent.data.params["strategy"] == "pnas"
    blocks = [
        sum(value != "none" for key, value in t.data.params.items() if key.startswith("model.cell"))
        for t in trials
    ]
    assert blocks == [1] * 4 + [2, 2]
