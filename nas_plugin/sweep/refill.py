"""Asynchronous refill: up to ``batch_size`` trials in flight, the next starts as one ends.

No batch barrier: when one trial finishes, the strategy hears it and the next candidate starts
at once. The strategy hears one result, then is asked to fill the free slots, then hears the
next: so the order of results (``on_told``, the tag ``nas.told``) fixes every ask and tell, and
a resumed sweep replays its finished trials in that order to rebuild the strategy exactly,
before it waits for anything new.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from nas_plugin.leaderboard import TrialRecord
from nas_plugin.sweep.ledger import Ledger
from nas_plugin.sweep.plan import SweepConfigError
from nas_plugin.sweep.proposals import Proposer
from nas_plugin.sweep.replay import Replayer
from nas_plugin.sweep.trials import Trials


def run_async(
    ledger: Ledger,
    proposer: Proposer,
    trials: Trials,
    batch_size: int,
    replayer: Replayer | None = None,
    on_told: Callable[[TrialRecord, int], None] | None = None,
) -> None:
    """``on_told(record, position)``: the strategy heard ``record`` at ``position``."""
    replayer = replayer or Replayer()
    in_flight: dict[Future, list[TrialRecord]] = {}
    replay_order = replayer.tell_order()
    next_number, exhausted, told = 0, False, 0
    with ThreadPoolExecutor(max_workers=batch_size) as pool:
        while True:
            while not exhausted and len(in_flight) < batch_size and next_number < ledger.n_trials:
                pending = {r.encoding for batch in in_flight.values() for r in batch}
                batch = proposer.next(1, pending)
                if not batch:
                    exhausted = True
                    ledger.log_exhausted()
                    break
                # Composed here (Hydra's config loader is not thread-safe), run in the pool.
                prepared = trials.prepare(batch, next_number)
                next_number += 1
                in_flight[pool.submit(trials.execute, prepared)] = prepared
            if not in_flight:
                return
            if replay_order:
                future = replayer.in_flight(in_flight, replay_order.popleft())
            else:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                # Several may finish together: the earliest trial first, the others after
                # the refill (wait() hands them back at once).
                future = min(done, key=lambda f: in_flight[f][0].number)
            future.result()  # execute() records failures itself; this re-raises bugs
            finished = trials.settle(in_flight.pop(future))
            for record in finished:
                if on_told is not None and not replayer.was_told(record.number):
                    on_told(record, told)
                told += 1
            ledger.conclude(finished)


REFILL_MODES = ("auto", "async", "batch")


def use_async_refill(refill: str, batch_size: int, in_process: bool) -> bool:
    """Whether trials start as soon as a worker frees up (no batch barrier); ``in_process``:
    the launcher runs jobs in this process (the basic launcher)."""
    if refill not in REFILL_MODES:
        raise SweepConfigError(f"hydra.sweeper.refill={refill!r}; allowed: {list(REFILL_MODES)}")
    if refill == "batch" or batch_size == 1:
        return False
    # The basic launcher runs jobs in this process, through Hydra's global state: one at a
    # time. Launchers that run jobs elsewhere take concurrent launches.
    if refill == "async" and in_process:
        raise SweepConfigError(
            "hydra.sweeper.refill=async needs a launcher that runs jobs in other processes "
            "(joblib, submitit, ray); the basic launcher runs one job at a time"
        )
    return not in_process
