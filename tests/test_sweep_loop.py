"""The sweep's collaborators without Hydra or MLflow: trials are a plain function called in
this process (:class:`InProcessTrials`), the strategies are the real ones."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from nas_plugin.estimators.hyperband import Hyperband
from nas_plugin.leaderboard import TrialRecord
from nas_plugin.objective import parse_objective
from nas_plugin.space import SearchSpace
from nas_plugin.strategies import make_strategy
from nas_plugin.sweep.ledger import Ledger, SweepAbortedError
from nas_plugin.sweep.loop import run_batches
from nas_plugin.sweep.plan import SweepConfigError, build_plan
from nas_plugin.sweep.plots import sweep_figures
from nas_plugin.sweep.proposals import Proposer
from nas_plugin.sweep.refill import run_async, use_async_refill
from nas_plugin.sweep.replay import Replayer
from nas_plugin.sweep.rungs import run_hyperband
from nas_plugin.sweep.trials import InProcessTrials
from nas_plugin.tracking.resume import Replay

SPACE = SearchSpace.from_dict({"width": [8, 16, 32, 64], "depth": {"low": 1, "high": 4}})
OBJECTIVE = parse_objective({"metric": "acc", "direction": "maximize"})


def accuracy(arch: dict) -> dict[str, float]:
    """A made-up but deterministic response surface: wider and deeper is better, with cost."""
    params = arch["width"] * arch["width"] * arch["depth"]
    return {"acc": arch["width"] / 64 + arch["depth"] / 8, "params": float(params)}


def parts(strategy_name: str = "random", n_trials: int = 6, max_failures: int = -1, seed: int = 0):
    strategy = make_strategy({"name": strategy_name}, SPACE, seed)
    ledger = Ledger(strategy, OBJECTIVE, n_trials, max_failures, "acc")
    return ledger, Proposer(strategy, ledger.seen)


def test_the_batch_loop_runs_n_distinct_trials_and_tells_the_strategy_each():
    ledger, proposer = parts("evolution", n_trials=10)
    heard = []
    tell = ledger.strategy.tell
    ledger.strategy.tell = lambda encoding, score: (heard.append(encoding), tell(encoding, score))
    run_batches(ledger, proposer, InProcessTrials(SPACE, OBJECTIVE, accuracy), batch_size=3)
    records = ledger.records
    assert [r.number for r in records] == list(range(10))
    assert len({r.encoding for r in records}) == 10  # never the same architecture twice
    assert all(r.ok and r.value == accuracy(r.architecture)["acc"] for r in records)
    assert {r.encoding for r in records} <= set(heard)


def test_the_same_seed_proposes_the_same_trials():
    def sweep(seed: int) -> list[dict]:
        ledger, proposer = parts("random", n_trials=5, seed=seed)
        run_batches(ledger, proposer, InProcessTrials(SPACE, OBJECTIVE, accuracy), 2)
        return [r.architecture for r in ledger.records]

    assert sweep(1) == sweep(1)
    assert sweep(1) != sweep(2)


def test_a_small_space_ends_the_loop_when_exhausted():
    space = SearchSpace.from_dict({"width": [8, 16, 32, 64]})
    strategy = make_strategy({"name": "grid"}, space, 0)
    ledger = Ledger(strategy, OBJECTIVE, 10)
    trials = InProcessTrials(space, OBJECTIVE, lambda arch: {"acc": arch["width"]})
    run_batches(ledger, Proposer(strategy, ledger.seen), trials, 3)
    assert sorted(r.architecture["width"] for r in ledger.records) == [8, 16, 32, 64]


def test_candidates_that_build_the_same_network_are_trained_once():
    """A space's ``equivalent`` hook: widths 8 and 16 build one network here (say, the extra
    channels feed nothing), so of four candidates three networks are trained, and the strategy
    hears the trained twin's score for the other."""
    space = SearchSpace.from_dict({"width": [8, 16, 32, 64]})
    strategy = make_strategy({"name": "grid"}, space, 0)
    heard: dict = {}
    tell = strategy.tell
    strategy.tell = lambda encoding, score: (
        heard.__setitem__(encoding, score),
        tell(encoding, score),
    )
    ledger = Ledger(strategy, OBJECTIVE, 10)
    trials = InProcessTrials(space, OBJECTIVE, lambda arch: {"acc": max(arch["width"], 16)})
    key = lambda encoding: max(space.decode(encoding)["width"], 16)  # noqa: E731
    run_batches(ledger, Proposer(strategy, ledger.seen, network_key=key), trials, 1)
    trained = sorted(r.architecture["width"] for r in ledger.records)
    assert len(trained) == 3 and trained[1:] == [32, 64] and trained[0] in (8, 16)
    assert len(heard) == 4  # every candidate told, the twin with its trained twin's score
    assert heard[space.encode({"width": 8})] == heard[space.encode({"width": 16})]


def test_more_failures_than_max_failures_abort_the_sweep():
    ledger, proposer = parts(max_failures=1)

    def broken(arch: dict) -> dict[str, float]:
        raise RuntimeError(f"width {arch['width']} does not fit")

    with pytest.raises(SweepAbortedError, match="2 trials failed.*does not fit"):
        run_batches(ledger, proposer, InProcessTrials(SPACE, OBJECTIVE, broken), 1)
    assert [r.status for r in ledger.records] == ["failed", "failed"]


def test_the_async_refill_keeps_the_workers_busy_and_orders_what_the_strategy_heard():
    ledger, proposer = parts(n_trials=6)
    running, most = set(), [0]
    lock = threading.Lock()

    def slow_first(arch: dict) -> dict[str, float]:
        with lock:
            running.add(threading.get_ident())
            most[0] = max(most[0], len(running))
        time.sleep(0.05)
        with lock:
            running.discard(threading.get_ident())
        return accuracy(arch)

    told: list[tuple[int, int]] = []
    trials = InProcessTrials(SPACE, OBJECTIVE, slow_first)
    run_async(ledger, proposer, trials, 2, on_told=lambda r, at: told.append((at, r.number)))
    assert sorted(r.number for r in ledger.records) == list(range(6))
    assert [at for at, _ in told] == list(range(6))
    assert [number for _, number in told] == [r.number for r in ledger.records]
    assert most[0] == 2  # two trials in flight at once


def test_hyperband_promotes_the_best_to_larger_budgets_and_tells_each_candidate_once():
    hyperband = Hyperband(budget_key="epochs", min_budget=1, max_budget=9, eta=3)
    ledger, proposer = parts(n_trials=13)
    told = []
    tell = ledger.strategy.tell
    ledger.strategy.tell = lambda encoding, score: (told.append(encoding), tell(encoding, score))
    rungs = []
    trials = InProcessTrials(SPACE, OBJECTIVE, accuracy)
    run_hyperband(hyperband, ledger, proposer, trials, 4, on_rung=rungs.append)
    records = ledger.records
    assert len(records) == 13 and rungs == records
    first_bracket = [r for r in records if r.bracket == 0]
    assert [r.budget for r in first_bracket] == [1] * 9 + [3] * 3 + [9]
    top = max(first_bracket[:9], key=lambda r: r.value)
    assert first_bracket[-1].encoding == top.encoding  # the best climbed to the top rung
    assert len(told) == len(set(told))  # one tell per candidate, when its climb ended


def test_a_resumed_trial_is_filled_from_the_replay_and_a_changed_one_is_refused():
    finished = TrialRecord(0, SPACE.encode({"width": 8, "depth": 1}), {}, [], status="ok")
    finished.value, finished.score, finished.run_id = 0.5, 0.5, "run-0"
    replayer = Replayer(Replay("parent", finished={0: finished}))
    trials = InProcessTrials(SPACE, OBJECTIVE, accuracy, replayer)
    (same,) = trials.prepare([finished.encoding], 0)
    assert (same.status, same.value, same.run_id) == ("ok", 0.5, "run-0")
    with pytest.raises(SweepAbortedError, match="cannot resume exactly: trial 0"):
        trials.prepare([SPACE.encode({"width": 64, "depth": 4})], 0)


@pytest.mark.parametrize(
    "refill, batch_size, in_process, expected",
    [
        ("auto", 4, False, True),
        ("auto", 4, True, False),
        ("auto", 1, False, False),
        ("batch", 4, False, False),
        ("async", 4, False, True),
    ],
)
def test_async_refill_is_chosen_from_the_mode_and_the_launcher(
    refill, batch_size, in_process, expected
):
    assert use_async_refill(refill, batch_size, in_process) is expected


@pytest.mark.parametrize(
    "refill, in_process, message",
    [
        ("eager", False, "hydra.sweeper.refill='eager'; allowed"),
        ("async", True, "refill=async needs a launcher that runs jobs in other processes"),
    ],
)
def test_a_bad_refill_mode_is_one_clear_error(refill, in_process, message):
    with pytest.raises(SweepConfigError, match=message):
        use_async_refill(refill, 2, in_process)


def test_the_sweep_figures_are_pngs(tmp_path):
    config = {
        "n_trials": 6,
        "batch_size": 2,
        "seed": 0,
        "max_failures": 3,
        "objective": {"metric": ["acc", "params"], "direction": ["maximize", "minimize"]},
        "strategy": {"name": "nsga2"},
        "search_space": {"name": "custom", "params": {}},
        "estimator": {"name": "full"},
        "params": {"width": [8, 16, 32, 64], "depth": {"low": 1, "high": 4}},
    }
    plan = build_plan(config, [])
    strategy = make_strategy(plan.strategy_config, plan.space, 0)
    ledger = Ledger(strategy, plan.objective, 6)
    trials = InProcessTrials(plan.space, plan.objective, accuracy)
    run_batches(ledger, Proposer(strategy, ledger.seen), trials, 2)
    import matplotlib.figure  # noqa: F401 - imported once per process; not the plots' cost

    started = time.process_time()
    drawn = sweep_figures(plan, ledger.records)
    for name, figure in drawn.items():
        figure.savefig(tmp_path / name, dpi=80)
    assert time.process_time() - started < 1.0  # CPU seconds: the sweep's budget for plots
    assert sorted(drawn) == ["objective_vs_cost.png", "trajectory.png"]
    assert any(r.pareto_rank == 0 for r in ledger.records)  # the front the plot highlights
    for name in drawn:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.width > 100
