"""Pruning rules on made-up curves, the pruner config's validation, and the MLflow channel
against a real tracking store (no Hydra: the channel is what a trial's job uses)."""

from __future__ import annotations

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

import nas_plugin
from nas_plugin.pruning import (
    ASHARule,
    CurveRule,
    EpochLoop,
    MedianRule,
    PrunerError,
    TrialChannel,
    check_pruner,
    make_rule,
)
from nas_plugin.pruning.channel import REPORT_METRIC, TAG_PRUNED_STEP, activate
from nas_plugin.pruning.curve import extrapolate
from nas_plugin.sweep.plan import SweepConfigError, build_plan
from nas_plugin.tracking.reporter import mlflow_reporting


def curve(quality: float, steps: int, start: int = 1) -> list[tuple[int, float]]:
    return [(s, quality * (1 - 0.5**s)) for s in range(start, steps + 1)]


# -- median ------------------------------------------------------------------------------------


def test_median_stops_a_trial_below_the_median_at_the_same_step():
    rule = MedianRule(warmup_steps=1, min_trials=2)
    others = [curve(0.9, 5), curve(0.8, 5), curve(0.1, 5)]  # median 0.8 * (1 - 0.5**s)
    assert not rule.decide(curve(0.5, 1), others, None).stop  # step 1 is the warm-up
    decision = rule.decide(curve(0.5, 2), others, None)
    assert decision.stop and "median" in decision.reason
    assert not rule.decide(curve(0.85, 2), others, None).stop
    assert not rule.decide(curve(0.8, 2), others, None).stop  # equal to the median: go on
    # At its budget a trial has trained to the end: never recorded as pruned there.
    assert rule.decide(curve(0.5, 4), others, 5).stop
    assert not rule.decide(curve(0.5, 5), others, 5).stop


def test_median_needs_min_trials_with_a_value_at_that_step():
    rule = MedianRule(warmup_steps=0, min_trials=2)
    # Only one other trial reached step 3; the other stopped at 2.
    others = [curve(0.9, 5), curve(0.9, 2)]
    assert rule.decide(curve(0.1, 2), others, None).stop
    assert not rule.decide(curve(0.1, 3), others, None).stop


# -- ASHA --------------------------------------------------------------------------------------


def test_asha_rungs_are_min_step_times_powers_of_eta():
    rule = ASHARule(min_step=2, eta=3)
    assert rule.rungs_crossed(None, 20) == [2, 6, 18]
    assert rule.rungs_crossed(5, 6) == [6]
    assert rule.rungs_crossed(6, 17) == []


def test_asha_keeps_the_top_one_over_eta_of_each_rung_without_a_barrier():
    rule = ASHARule(min_step=1, eta=2)
    # The first trial at a rung always goes on: nobody to compare with.
    assert not rule.decide(curve(0.2, 1), [], 8).stop
    # Second: top 1 of 2 -> must be the best so far.
    assert rule.decide(curve(0.2, 1), [curve(0.5, 8)], 8).stop
    assert not rule.decide(curve(0.6, 1), [curve(0.5, 8)], 8).stop
    # Four results at rung 1 (own included): top 2 go on.
    others = [curve(0.9, 8), curve(0.5, 8), curve(0.1, 1)]
    assert not rule.decide(curve(0.6, 1), others, 8).stop
    decision = rule.decide(curve(0.4, 1), others, 8)
    assert decision.stop and "top 2 of 4" in decision.reason
    # Between rungs nothing is judged, however bad.
    assert not rule.decide(curve(0.01, 3), others, 8).stop


def test_asha_judges_at_the_highest_rung_crossed_and_not_at_the_budget():
    rule = ASHARule(min_step=1, eta=2)
    # Reports every 3 steps: the report at 3 crosses rung 2; peers' values there are where
    # they crossed it (the first report at or after 2).
    sparse_own = [(3, 0.3)]
    peers = [[(1, 0.1), (2, 0.5), (4, 0.6)]]
    assert rule.decide(sparse_own, peers, None).stop
    # Rung 8 is the budget: training is over there, nothing to save.
    assert not rule.decide([(4, 0.9), (8, 0.0)], [curve(0.9, 8)], 8).stop
    assert rule.decide([(4, 0.9), (8, 0.0)], [curve(0.9, 16)], 16).stop


# -- learning-curve extrapolation --------------------------------------------------------------


def test_extrapolation_recovers_a_saturating_power_law():
    points = [(t, 0.9 - 0.5 * t**-0.8) for t in range(1, 6)]
    predicted, model = extrapolate(points, 50)
    assert model == "power law"
    assert predicted == pytest.approx(0.9 - 0.5 * 50**-0.8, abs=1e-3)
    # Two points: only a line in log t can be fitted.
    assert extrapolate(points[:2], 50)[1] == "log-linear"


def test_curve_rule_stops_a_trial_that_cannot_catch_the_best():
    rule = CurveRule(min_points=3, margin=0.02)
    best = [curve(0.95, 20)]
    low = [(t, 0.6 - 0.3 * t**-1.0) for t in range(1, 4)]  # heads for 0.6
    high = [(t, 0.99 - 0.8 * t**-1.0) for t in range(1, 4)]  # low now, heads for 0.99
    assert not rule.decide(low[:2], best, 20).stop  # too few points yet
    decision = rule.decide(low, best, 20)
    assert decision.stop and "power law" in decision.reason
    assert not rule.decide(high, best, 20).stop
    assert not rule.decide(low, [], 20).stop  # no best to beat yet
    # Close to the best: within the margin, it goes on.
    near = [(t, 0.95 - 0.3 * t**-1.0) for t in range(1, 4)]  # 0.935 at 20, + 0.02 > 0.95
    assert not rule.decide(near, best, 20).stop


def test_curve_rule_needs_a_budget():
    with pytest.raises(PrunerError, match="max_step"):
        CurveRule().decide(curve(0.5, 3), [curve(0.9, 3)], None)
    assert CurveRule(max_step=20).decide(curve(0.1, 3), [curve(0.9, 20)], None).stop


# -- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "hyperband"}, "pruner.name='hyperband' is unknown; allowed: ['none', 'median'"),
        ({"name": "asha", "eta": 1}, "hydra.sweeper.pruner.eta=1 (pruner 'asha') must be an"),
        ({"name": "asha", "rate": 2}, "unknown option(s) ['rate'] for pruner 'asha'; allowed"),
        ({"name": "median", "warmup_steps": -1}, "warmup_steps=-1 (pruner 'median')"),
        ({"name": "curve", "margin": "x"}, "margin='x' (pruner 'curve') must be a number"),
        ({"name": "none", "eta": 3}, "option(s) ['eta'] given, but the pruner is 'none'"),
    ],
)
def test_bad_pruner_config_is_named(config, message):
    with pytest.raises(PrunerError) as err:
        make_rule(config)
    assert message in str(err.value)


def test_pruner_config_against_the_sweep():
    assert check_pruner(None, False, "full") == {"name": "none"}
    assert check_pruner({"name": "asha"}, False, "full") == {
        "name": "asha",
        "min_step": 1,
        "eta": 3,
        "max_step": None,
    }
    with pytest.raises(PrunerError, match="several"):
        check_pruner({"name": "median"}, True, "full")
    with pytest.raises(PrunerError, match="hyperband both stop trials early"):
        check_pruner({"name": "asha"}, False, "hyperband")


def test_a_bad_pruner_stops_the_sweep_before_any_trial():
    cfg = {
        "n_trials": 4,
        "batch_size": 1,
        "seed": 0,
        "max_failures": 3,
        "params": {"x": [1, 2]},
        "strategy": {"name": "random"},
        "estimator": {"name": "full"},
        "objective": {"metric": "acc"},
    }
    assert build_plan({**cfg, "pruner": {"name": "median"}}, []).pruner["min_trials"] == 2
    with pytest.raises(SweepConfigError, match=r"hydra.sweeper.pruner.min_step=0"):
        build_plan({**cfg, "pruner": {"name": "asha", "min_step": 0}}, [])


# -- the channel, on a real MLflow store -------------------------------------------------------


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One real SQLite store for the module (creating one takes seconds)."""
    client = MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")
    return client, client.create_experiment("pruning")


@pytest.fixture
def store(tracking):
    """A new sweep's parent run with three finished trials' reports (0.9, 0.8, 0.3 * curve)."""
    client, experiment = tracking
    parent = client.create_run(experiment, tags={"nas.sweep": "parent"}).info.run_id
    for number, quality in enumerate((0.9, 0.8, 0.3)):
        run = client.create_run(
            experiment, tags={"mlflow.parentRunId": parent, "nas.trial": str(number)}
        ).info.run_id
        client.log_batch(
            run, metrics=[Metric(REPORT_METRIC, v, 0, s) for s, v in curve(quality, 4)]
        )
        client.set_terminated(run)
    # A run of another sweep must not count.
    stranger = client.create_run(experiment, tags={"nas.trial": "9"}).info.run_id
    client.log_batch(stranger, metrics=[Metric(REPORT_METRIC, 0.0, 0, s) for s in range(1, 5)])
    return client, experiment, parent


def channel_for(store, number: int, **kwargs) -> TrialChannel:
    client, experiment, parent = store
    run = client.create_run(
        experiment, tags={"mlflow.parentRunId": parent, "nas.trial": str(number)}
    ).info.run_id
    return TrialChannel(
        client, experiment_id=experiment, parent_run_id=parent, run_id=run, trial=number, **kwargs
    )


def test_the_channel_logs_reports_and_stops_a_trailing_trial(store):
    client = store[0]
    channel = channel_for(store, 3, metric="acc", pruner={"name": "median", "min_trials": 2})
    with activate(channel):
        assert nas_plugin.report(1, {"acc": 0.05, "loss": 3.0}) is False  # warm-up
        assert nas_plugin.report(2, {"acc": 0.3}) is True  # median of 0.675, 0.6, 0.225
        assert nas_plugin.report(3, {"acc": 0.99}) is True  # stays stopped
    assert nas_plugin.report(4, 0.1) is False  # outside the trial: a no-op
    assert channel.pruned_step == 2 and "median" in channel.reason
    history = client.get_metric_history(channel.run_id, REPORT_METRIC)
    assert [(m.step, m.value) for m in history] == [(1, 0.05), (2, 0.3), (3, 0.99)]
    tags = client.get_run(channel.run_id).data.tags
    assert tags[TAG_PRUNED_STEP] == "2" and "below the median" in tags["nas.prune_reason"]


def test_the_channel_respects_a_minimised_objective(store):
    # The siblings' reports are losses here: 0.9, 0.8 (bad) and 0.3 (good) times the curve.
    worse = channel_for(store, 4, metric="loss", direction="minimize", pruner={"name": "median"})
    better = channel_for(store, 5, metric="loss", direction="minimize", pruner={"name": "median"})
    assert not worse.report(1, 0.5) and worse.report(2, 0.85)  # above the median loss 0.6
    assert not better.report(1, 0.5) and not better.report(2, 0.2)


def test_the_channel_without_a_rule_only_logs(store):
    channel = channel_for(store, 6, metric="acc")
    with activate(channel):
        assert not any(nas_plugin.report(s, 0.0) for s in range(1, 5))
    history = store[0].get_metric_history(channel.run_id, REPORT_METRIC)
    assert [m.step for m in history] == [1, 2, 3, 4]


def test_epoch_loop_ends_once_pruned_and_runs_every_epoch_outside_a_sweep(store):
    loop = EpochLoop(8)
    assert [e for e in loop if not loop.report(0.0)] == list(range(1, 9))
    assert loop.epochs_done == 8 and not loop.pruned

    channel = channel_for(store, 7, metric="acc", pruner={"name": "asha", "eta": 2})
    loop = EpochLoop(8)
    with activate(channel), mlflow_reporting():
        seen = []
        for epoch in loop:
            seen.append(epoch)
            loop.report({"acc": 0.1 * (1 - 0.5**epoch)})
    assert seen == [1] and loop.pruned and loop.epochs_done == 1


def test_report_rejects_what_is_not_a_step_or_a_number(store):
    channel = channel_for(store, 8, metric="acc")
    with pytest.raises(ValueError, match="integer"):
        channel.report(1.5, 0.1)
    with pytest.raises(TypeError, match="a number or a dict"):
        channel.report(1, "high")
    # A dict without the objective metric: nothing to prune on, nothing logged.
    assert channel.report(1, {"other": 1.0}) is False
    assert not store[0].get_metric_history(channel.run_id, REPORT_METRIC)
