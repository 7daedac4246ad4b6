"""Hyperband: successive-halving brackets, new candidates at a small budget, the best promoted.

The strategy hears each candidate once, when its climb ends (not promoted, or at the top rung),
with the score at the largest budget it reached.
"""

from __future__ import annotations

from collections.abc import Callable

from nas_plugin.estimators.hyperband import Hyperband, promote
from nas_plugin.leaderboard import TrialRecord
from nas_plugin.sweep.ledger import Ledger
from nas_plugin.sweep.proposals import Proposer
from nas_plugin.sweep.trials import Trials


def run_hyperband(
    hyperband: Hyperband,
    ledger: Ledger,
    proposer: Proposer,
    trials: Trials,
    batch_size: int,
    on_rung: Callable[[TrialRecord], None] | None = None,
) -> None:
    """``on_rung(record)``: a trial ran at its rung (``record.budget``, ``.rung``, ``.bracket``)."""
    records = ledger.records
    for bracket, rungs in hyperband.cycle():
        climbing = proposer.next(min(rungs[0].candidates, ledger.remaining))
        if not climbing:
            ledger.log_exhausted()
            return
        for level, rung in enumerate(rungs):
            results: list[TrialRecord] = []
            for start in range(0, len(climbing), batch_size):
                if ledger.remaining <= 0:
                    break
                chunk = climbing[start : start + batch_size][: ledger.remaining]
                budget = {hyperband.budget_key: rung.budget}
                new_records = trials.launch(chunk, len(records), extra=budget)
                for record in new_records:
                    record.budget, record.rung, record.bracket = rung.budget, level, bracket
                    if on_rung is not None:
                        on_rung(record)
                ledger.accept(new_records)
                results += new_records
            last_rung = level == len(rungs) - 1 or ledger.remaining <= 0
            keep = 0 if last_rung else rungs[level + 1].candidates
            promoted = promote([(r.encoding, first(r.score)) for r in results], keep)
            for record in results:
                ledger.seen[record.encoding] = record
                if record.encoding not in promoted:
                    ledger.strategy.tell(record.encoding, record.score)
            climbing = promoted
            if not climbing:
                break
        if ledger.remaining <= 0:
            return


def first(score: float | tuple[float, ...] | None) -> float | None:
    return score[0] if isinstance(score, tuple) else score
