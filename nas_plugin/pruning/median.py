"""Median stopping (Golovin et al., 2017, Google Vizier): stop a trial whose value at a step is
below the median of the other trials' values at the same step (never at its step budget, when
the loop reports one: a trial that has trained to the end is done, not pruned)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from nas_plugin.pruning.base import (
    CONTINUE,
    Curve,
    Decision,
    PruningRule,
    check_int,
    value_at,
)


class MedianRule(PruningRule):
    name = "median"

    def __init__(self, warmup_steps: int = 1, min_trials: int = 2) -> None:
        # No trial is stopped at a step <= warmup_steps: the first epochs rank badly.
        self.warmup_steps = check_int(self.name, "warmup_steps", warmup_steps, 0)
        # Other trials that must have a value at the step before the median means anything.
        self.min_trials = check_int(self.name, "min_trials", min_trials, 1)

    def decide(self, own: Curve, others: Sequence[Curve], max_step: int | None) -> Decision:
        step, value = own[-1]
        if step <= self.warmup_steps:
            return CONTINUE
        if max_step is not None and step >= max_step:
            return CONTINUE  # trained to its budget: nothing left to save, so not "pruned"
        peers = [v for curve in others if (v := value_at(curve, step)) is not None]
        if len(peers) < self.min_trials:
            return CONTINUE
        median = statistics.median(peers)
        if value < median:
            return Decision(
                True,
                f"median: {value:.4g} at step {step} is below the median {median:.4g} "
                f"of {len(peers)} other trial(s)",
            )
        return CONTINUE
