"""Pareto helpers on hand-made points, and the NB201 accuracy-vs-latency benchmark."""

import itertools

import numpy as np
import pytest

from nas_plugin.bench.pareto_bench import mnas_reward, run_pareto_benchmark
from nas_plugin.pareto import (
    crowding_distance,
    dominates,
    hypervolume,
    non_dominated_sort,
    pareto_front,
)
from nas_plugin.strategies import StrategyError

# Higher is better on both axes. Front 0: a staircase (with a duplicate); then two below it.
POINTS = [[1, 5], [2, 4], [3, 3], [2, 2], [1, 1], [3, 3], [0, 6]]


def test_dominates_needs_better_somewhere_and_worse_nowhere():
    assert dominates([2, 2], [1, 2])
    assert not dominates([2, 2], [2, 2])
    assert not dominates([3, 1], [1, 3])


@pytest.mark.parametrize(
    "points, fronts",
    [
        (POINTS, [[0, 1, 2, 5, 6], [3], [4]]),
        ([[1, 1], [2, 2], [3, 3]], [[2], [1], [0]]),
        ([[0, 1], [1, 0]], [[0, 1]]),
        ([[1, 2, 3], [3, 2, 1], [1, 1, 1], [0, 0, 0]], [[0, 1], [2], [3]]),
        ([], []),
    ],
)
def test_non_dominated_sort_splits_points_into_fronts(points, fronts):
    assert non_dominated_sort(points) == fronts
    assert pareto_front(points) == (fronts[0] if fronts else [])


def test_pareto_front_matches_pairwise_dominance_on_random_points():
    points = np.random.default_rng(0).integers(0, 6, size=(60, 3))
    expected = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    assert pareto_front(points) == expected


def test_crowding_distance_gives_extremes_inf_and_gaps_to_the_rest():
    front = np.array([[1, 5], [2, 4], [4, 2], [5, 1]])
    distance = crowding_distance(front)
    assert np.isinf(distance[0]) and np.isinf(distance[3])
    # Interior: (neighbour gap / range) summed over both axes: (4-1)/4 + (5-2)/4.
    assert distance[1] == pytest.approx(1.5)
    assert distance[2] == pytest.approx(1.5)
    assert np.all(np.isinf(crowding_distance([[1, 2], [3, 4]])))


def test_crowding_distance_ignores_an_axis_on_which_all_points_are_equal():
    distance = crowding_distance([[0, 7], [1, 7], [3, 7]])
    assert distance[1] == pytest.approx(1.0)


def test_hypervolume_2d_against_a_hand_computation():
    # Staircase (1,5), (2,4), (3,3) above (0,0): 1*5 + 1*4 + 1*3 = 12. (0,6) is not strictly
    # better than the reference on x, dominated points and duplicates change nothing.
    assert hypervolume(POINTS, [0, 0]) == pytest.approx(12.0)
    assert hypervolume([[3, 3]], [1, 1]) == pytest.approx(4.0)
    assert hypervolume([[-1.0, -2.0], [-2.0, -1.0]], [-3.0, -3.0]) == pytest.approx(3.0)
    assert hypervolume([], [0, 0]) == 0.0
    assert hypervolume([[0, 1]], [0, 0]) == 0.0


def _grid_count(points: np.ndarray) -> int:
    """Unit cells above the origin covered by the boxes [0, p] of integer points."""
    top = points.max(axis=0)
    return sum(
        bool(np.any(np.all(points >= np.array(cell) + 1, axis=1)))
        for cell in itertools.product(*(range(t) for t in top))
    )


@pytest.mark.parametrize("m, seed", [(3, 0), (3, 1), (4, 2)])
def test_hypervolume_3d_and_4d_match_an_exact_grid_count(m, seed):
    points = np.random.default_rng(seed).integers(1, 7, size=(15, m))
    assert hypervolume(points, np.zeros(m)) == pytest.approx(_grid_count(points))


def test_hypervolume_3d_matches_monte_carlo_on_float_points():
    rng = np.random.default_rng(3)
    points = rng.random((20, 3))
    samples = rng.random((40_000, 3))
    covered = np.zeros(len(samples), dtype=bool)
    for point in points:
        covered |= np.all(samples <= point, axis=1)
    assert hypervolume(points, [0, 0, 0]) == pytest.approx(covered.mean(), abs=0.01)


def test_hypervolume_rejects_a_reference_of_the_wrong_dimension():
    with pytest.raises(ValueError, match="2 objectives"):
        hypervolume([[1, 2]], [0, 0, 0])


def test_mnas_reward_trades_a_little_accuracy_for_a_lot_of_latency():
    assert mnas_reward(90.0, 10.0, target=10.0) == 90.0
    # Half the latency is worth about 5% accuracy (2 ** 0.07 = 1.05).
    assert mnas_reward(86.0, 5.0, target=10.0) > mnas_reward(90.0, 10.0, target=10.0)


def test_pareto_benchmark_reports_hypervolume_fractions_per_checkpoint():
    rows = run_pareto_benchmark(
        "nb201_cifar10", "cifar10_test_acc", "lat_ms_gold_6226", ["nsga2", "random"], [5, 20], 2
    )
    assert [(r["strategy"], r["queries"]) for r in rows] == [
        ("nsga2", 5),
        ("nsga2", 20),
        ("random", 5),
        ("random", 20),
    ]
    for row in rows:
        assert 0 < row["hv_fraction_mean"] <= 1
        assert row["hv_fraction_std"] >= 0 and row["ms_per_ask"] >= 0 and row["seeds"] == 2
    # Same seeds, more queries: the found set only grows.
    assert rows[1]["hv_fraction_mean"] >= rows[0]["hv_fraction_mean"]


def test_pareto_benchmark_rejects_an_unknown_strategy():
    with pytest.raises(StrategyError, match="unknown strategy"):
        run_pareto_benchmark("nb201_cifar10", "cifar10_test_acc", "lat_ms_gold_6226", ["x"], [5], 1)
