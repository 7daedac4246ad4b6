"""Multi-fidelity: the Hyperband schedule, promotions, and a successive-halving sweep in MLflow."""

from __future__ import annotations

import pytest
from conftest import assert_plots, run_app_in_process

from nas_plugin.estimators import EstimatorError, make_estimator
from nas_plugin.estimators.hyperband import Hyperband, Rung, promote


def test_hyperband_brackets_follow_li_et_al():
    hyperband = Hyperband(min_budget=1, max_budget=9, eta=3)
    assert hyperband.brackets == 3
    assert hyperband.bracket(0) == [Rung(9, 1), Rung(3, 3), Rung(1, 9)]
    assert hyperband.bracket(1) == [Rung(5, 3), Rung(1, 9)]
    assert hyperband.bracket(2) == [Rung(3, 9)]
    assert hyperband.bracket(3) == hyperband.bracket(0)  # brackets cycle


def test_successive_halving_is_one_bracket():
    halving = Hyperband(min_budget=1, max_budget=8, eta=2, brackets=1)
    assert halving.bracket(0) == [Rung(8, 1), Rung(4, 2), Rung(2, 4), Rung(1, 8)]
    assert halving.bracket(1) == halving.bracket(0)


def test_promotion_keeps_the_best_and_never_a_failure():
    scores = [("a", 0.5), ("b", None), ("c", 0.9), ("d", 0.7), ("e", 0.9)]
    assert promote(scores, 3) == ["c", "e", "d"]
    assert promote(scores, 10) == ["c", "e", "d", "a"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"eta": 1}, "eta=1 must be an integer >= 2"),
        ({"min_budget": 0}, "min_budget=0 must be a number > 0"),
        ({"min_budget": 10, "max_budget": 9}, "min_budget=10 > max_budget=9"),
        ({"brackets": 0}, "brackets=0 must be a positive integer"),
        ({"rungs": 3}, "unknown option(s) ['rungs']"),
    ],
)
def test_bad_hyperband_config(options, message):
    with pytest.raises(EstimatorError) as err:
        make_estimator({"name": "hyperband", **options})
    assert message in str(err.value)


APP = """
import hydra


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    # Wider is better, and every architecture improves with more epochs.
    quality = 1.0 - abs(cfg.net.width - 40) / 100
    return {"val_acc": quality * (1.0 - 1.0 / (cfg.train.epochs + 1))}


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - override hydra/sweeper/estimator: hyperband
  - _self_
net: {width: 8}
train: {epochs: 100}
hydra:
  sweeper:
    n_trials: 13
    objective: {metric: val_acc}
    mlflow: {experiment: halving}
    estimator: {brackets: 1}
    params:
      net.width: {low: 4, high: 64, step: 4}
"""


@pytest.mark.e2e
def test_successive_halving_sweep_logs_each_rung_with_its_budget(write_app):
    cwd = write_app(APP, CONFIG)
    result = run_app_in_process(cwd, "train.py", "-m")
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("halving")
    assert parent.data.params["estimator.name"] == "hyperband"
    assert len(children) == 13
    budgets = [c.data.params["budget"] for c in children]
    assert budgets == ["1"] * 9 + ["3"] * 3 + ["9"]
    assert [c.data.tags["nas.rung"] for c in children] == ["0"] * 9 + ["1"] * 3 + ["2"]
    rung0 = sorted(children[:9], key=lambda c: -c.data.metrics["val_acc"])
    promoted = {c.data.params["net.width"] for c in children[9:12]}
    assert promoted == {c.data.params["net.width"] for c in rung0[:3]}
    rung1_best = max(children[9:12], key=lambda c: c.data.metrics["val_acc"])
    assert children[12].data.params["net.width"] == rung1_best.data.params["net.width"]
    # The champion is the fully trained candidate, not a cheaper run with a similar score.
    assert parent.data.tags["nas.best_run_id"] == children[12].info.run_id
    assert_plots(result.client(), parent.info.run_id, "trajectory.png", "hyperband_rungs.png")
