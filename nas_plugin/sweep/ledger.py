"""The sweep's book of finished trials: it tells the strategy, ranks, reports and stops.

One job: every finished trial goes through :meth:`Ledger.conclude` (the strategy hears it) or
:meth:`Ledger.accept` (booked only: Hyperband tells a strategy when a climb ends), which keeps
the Pareto ranks, prints the progress line and enforces ``max_failures``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hydra.errors import CompactHydraException

from nas_plugin.leaderboard import TrialRecord, best_of, progress_line
from nas_plugin.objective import Objective
from nas_plugin.pareto import non_dominated_sort
from nas_plugin.space import Encoding
from nas_plugin.strategies import Strategy

# The sweep's one logger: the collaborators speak as the sweeper.
log = logging.getLogger("nas_plugin.sweeper")


class SweepAbortedError(CompactHydraException, RuntimeError):
    """Too many trials failed (``max_failures``); finished trials are kept in MLflow."""


class Ledger:
    def __init__(
        self,
        strategy: Strategy,
        objective: Objective,
        n_trials: int,
        max_failures: int = -1,
        metric_name: str = "value",
        after_trial: Callable[[TrialRecord, int], None] | None = None,
    ) -> None:
        self.strategy = strategy
        self.objective = objective
        self.n_trials = n_trials
        self.max_failures = max_failures
        self.metric_name = metric_name
        # Called with each booked trial and the count so far (the pre-screen and predictor).
        self.after_trial = after_trial
        self.records: list[TrialRecord] = []
        # Every encoding already evaluated: the strategy is never given one to train twice.
        self.seen: dict[Encoding, TrialRecord] = {}

    @property
    def remaining(self) -> int:
        return self.n_trials - len(self.records)

    def conclude(self, finished: list[TrialRecord]) -> None:
        """Tell the strategy about finished trials, then book them."""
        for record in finished:
            self.seen[record.encoding] = record
            self.strategy.tell(record.encoding, record.score)
        self.accept(finished)

    def accept(self, new_records: list[TrialRecord]) -> None:
        """Book finished trials: Pareto ranks, progress lines, the failure limit."""
        records = self.records
        for record in new_records:
            records.append(record)
            if self.after_trial is not None:
                self.after_trial(record, len(records))
            if self.objective.multi:
                update_pareto_ranks(records)
            best = best_of(records)
            log.info(progress_line(record, len(records), self.n_trials, best, self.metric_name))
        failed = sum(1 for r in records if not r.ok)
        if 0 <= self.max_failures < failed:
            last = next(r for r in reversed(records) if not r.ok)
            raise SweepAbortedError(
                f"{failed} trials failed, more than hydra.sweeper.max_failures="
                f"{self.max_failures}; stopping the sweep. Last error (trial {last.number}): "
                f"{last.error}"
            )

    def log_exhausted(self) -> None:
        log.info(
            "The strategy has no new candidates after %d trials: the search space is exhausted.",
            len(self.records),
        )


def update_pareto_ranks(records: list[TrialRecord]) -> None:
    done = [r for r in records if r.ok and isinstance(r.score, tuple)]
    for rank, front in enumerate(non_dominated_sort([r.score for r in done])):
        for index in front:
            done[index].pareto_rank = rank
