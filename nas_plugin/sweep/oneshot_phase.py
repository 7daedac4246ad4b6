"""One-shot strategies (darts, gdas, proxyless) search before any trial is trained.

``searches`` independent search jobs run first; their distinct derived cells are the trials (at
most ``n_trials`` of them). Afterwards every trial is linked to the search(es) that derived it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from omegaconf import DictConfig

from nas_plugin.leaderboard import TrialRecord
from nas_plugin.oneshot.job import SearchOutcome, link_search, run_search_phase
from nas_plugin.strategies import Strategy
from nas_plugin.sweep.plan import SweepPlan
from nas_plugin.tracking.sweep_run import SweepRun

log = logging.getLogger("nas_plugin.sweeper")


def needs_search(strategy: Strategy) -> bool:
    return bool(getattr(strategy, "needs_search", False))


def search_first(
    hydra_context: Any,
    config: DictConfig,
    task_function: Any,
    plan: SweepPlan,
    strategy: Strategy,
    sweep_run: SweepRun,
) -> tuple[SweepPlan, list[SearchOutcome]]:
    """Run the searches; the plan's ``n_trials`` shrinks to the cells they derived."""
    searches = run_search_phase(
        hydra_context,
        config,
        task_function,
        plan.fixed_overrides,
        strategy,
        sweep_run,
        strategy.options.searches,  # type: ignore[attr-defined]
        plan.batch_size,
    )
    derived = strategy.n_candidates  # type: ignore[attr-defined]
    if derived > plan.n_trials:
        log.warning(
            "The searches derived %d distinct cells; n_trials=%d trains the first %d.",
            derived,
            plan.n_trials,
            plan.n_trials,
        )
    return dataclasses.replace(plan, n_trials=min(plan.n_trials, derived)), searches


def link_trials(
    sweep_run: SweepRun, searches: list[SearchOutcome], records: list[TrialRecord]
) -> None:
    link_search(sweep_run.client, searches, records)


def budget_text(n_trials: int, strategy: Strategy) -> str:
    """``40 trials``; for a one-shot strategy ``2 searches, then at most 40 trials``."""
    if needs_search(strategy):
        searches = strategy.options.searches  # type: ignore[attr-defined]
        return f"{searches} search{'es' if searches > 1 else ''}, then at most {n_trials} trials"
    return f"{n_trials} trials"
