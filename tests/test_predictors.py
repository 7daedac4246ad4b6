"""The learned performance predictor: unit tests on synthetic scores, and its held-out rank
correlation logged by a real table-backed NAS-Bench-201 sweep."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import REPO, assert_plots, run_app_in_process
from scipy.stats import spearmanr

from nas_plugin.predictors import HeldOutCorrelation, Predictor, PredictorError
from nas_plugin.space import nb201

# An additive ground truth over the NB201 cell: each operation on each edge adds a fixed amount.
SPACE = nb201.search_space()
_WEIGHTS = {
    (name, op): random.Random(f"{name}{op}").uniform(0, 1)
    for name in SPACE.names
    for op in nb201.OPS
}


def truth(encoding) -> float:
    return sum(_WEIGHTS[(name, op)] for name, op in encoding)


def _samples(count: int, seed: int) -> list:
    rng = random.Random(seed)
    found: dict = {}
    while len(found) < count:
        found[SPACE.sample(rng)] = None
    return list(found)


@pytest.mark.parametrize("model", ["gp", "mlp"])
def test_predictor_learns_an_additive_score_and_ranks_unseen_cells(model):
    cells = _samples(260, seed=1)
    train, test = cells[:60], cells[60:]
    predictor = Predictor(SPACE, seed=0, model=model)
    for cell in train:
        predictor.add(cell, truth(cell) + random.Random(str(cell)).gauss(0, 0.05))
    mean, std = predictor.predict(test)
    assert mean.shape == std.shape == (200,) and np.all(std > 0)
    rho = spearmanr(mean, [truth(c) for c in test]).statistic
    assert rho > 0.8, rho


def test_predictor_ignores_failed_results_and_a_repeat_replaces():
    predictor = Predictor(SPACE, min_trials=3)
    a, b, c, d = _samples(4, seed=2)
    predictor.add(a, 1.0)
    predictor.add(b, None)  # failed: not fitted
    predictor.add(c, 2.0)
    assert not predictor.ready
    predictor.add(a, 3.0)  # a repeat replaces, it does not count twice
    assert len(predictor.observed) == 2 and not predictor.ready
    predictor.add(d, 0.5)
    assert predictor.ready and [s for _, s in predictor.observed] == [3.0, 2.0, 0.5]


def test_held_out_correlation_predicts_each_result_before_learning_it():
    held_out = HeldOutCorrelation(Predictor(SPACE, min_trials=5))
    cells = _samples(40, seed=3)
    predictions = [held_out.observe(cell, truth(cell)) for cell in cells]
    # Nothing to predict from until 5 results are in; then every new result is predicted first.
    assert predictions[:5] == [None] * 5 and all(p is not None for p in predictions[5:])
    assert len(held_out.pairs) == 35
    assert held_out.observe(cells[0], truth(cells[0])) is None  # already known: not held out
    assert held_out.observe(_samples(41, seed=3)[-1], None) is None  # failed: nothing to rank
    correlation = held_out.correlation()
    assert correlation is not None and correlation["spearman"] > 0.5
    assert -1 <= correlation["kendall"] <= correlation["spearman"]


def test_held_out_correlation_needs_three_pairs():
    held_out = HeldOutCorrelation(Predictor(SPACE, min_trials=2))
    for cell in _samples(4, seed=4):
        held_out.observe(cell, truth(cell))
    assert len(held_out.pairs) == 2 and held_out.correlation() is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "forest"}, "predictor.name='forest' is unknown; allowed: ['none', 'gp', 'mlp']"),
        ({"name": "gp", "min_trials": 0}, "predictor.min_trials=0 must be an integer >= 1"),
        ({"name": "gp", "score_warp": "log"}, "score_warp='log' is unknown; allowed: ['rank'"),
        ({"name": "gp", "windw": 5}, "unknown option(s) ['windw']; allowed: ['score_warp'"),
        ({"name": "mlp", "window": 2}, "predictor.window=2 must be null or an integer >= 3"),
    ],
)
def test_bad_predictor_config_names_the_key(options, message):
    with pytest.raises(PredictorError) as err:
        HeldOutCorrelation.from_config(options, SPACE, seed=0)
    assert message in str(err.value)


def test_no_predictor_by_default():
    assert HeldOutCorrelation.from_config({"name": "none"}, SPACE, 0) is None
    assert HeldOutCorrelation.from_config(None, SPACE, 0) is None


@pytest.mark.e2e
def test_tabular_sweep_logs_a_held_out_correlation_that_becomes_positive(tmp_path):
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/predictor=gp",
        "hydra.sweeper.n_trials=30",
    )
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("nas-nb201-tabular")
    assert parent.data.params["predictor"] == "gp"
    client = result.client()
    series = client.get_metric_history(parent.info.run_id, "predictor_spearman")
    kendall = client.get_metric_history(parent.info.run_id, "predictor_kendall")
    steps = [m.step for m in series]
    # One point per finished trial from the 8th on (5 to learn from, 3 held-out pairs), at
    # step = trials finished.
    assert steps == list(range(8, 31)) and [m.step for m in kendall] == steps
    assert series[-1].value > 0.3, [round(m.value, 2) for m in series]
    assert kendall[-1].value > 0.2
    # Each trial after the first 5 carries the score the predictor expected of it beforehand.
    predicted = [c for c in children if "predicted_score" in c.data.metrics]
    assert len(predicted) == 25
    assert_plots(client, parent.info.run_id, "trajectory.png", "predicted_vs_actual.png")
