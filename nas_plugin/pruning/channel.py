"""The channel between a running trial and the pruner: MLflow itself.

Why MLflow and not a separate store (a file, Redis, an RPC server in the sweeper):

- Every trial already is an MLflow child run, and the job already knows the tracking URI, the
  parent run and its own run (:class:`~nas_plugin.tracking.trial.TrialContext`). A report is
  one metric write to the trial's own run (``nas.intermediate`` at the reported step); the
  decision is computed in the job from the histories of the sibling trials of the same parent
  run. Nothing new has to run, be reachable, or be cleaned up.
- It works wherever the trials can log, which the sweep already requires: jobs in the sweeper's
  process (basic launcher), in other processes (joblib), on other machines (submitit, Ray)
  against an ``mlflow server``. The sweeper does not need to be reachable from the jobs.
- The curves the rules decide on are the ones the user sees in the MLflow UI, and they survive
  the sweep: a resumed sweep's trials are judged against the trials recorded before the crash.
- The cost is a store round trip per report plus one history read per sibling that is still
  running (finished siblings' curves are cached in the job); with per-epoch reports that is
  milliseconds against seconds of training. Reporting every optimizer step would be the wrong
  granularity for any store; report per evaluation.

Decisions are made by the job, not the sweeper, so two trials judged at the same moment may
each see the other one step behind; asynchronous ASHA is designed for exactly that.

The report goes under its own metric key rather than the app's (``val_accuracy``...): the app
may or may not log its metric itself, under whatever steps it likes, and a pruner must not
depend on that.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from nas_plugin.pruning.config import make_rule

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from nas_plugin.pruning.base import PruningRule

log = logging.getLogger(__name__)

# The metric a trial's reports are logged under, in its own run.
REPORT_METRIC = "nas.intermediate"
# Tags of a pruned trial's run (besides nas.status=pruned, set when the job returns).
TAG_PRUNED_STEP = "nas.pruned_step"
TAG_PRUNE_REASON = "nas.prune_reason"

_ACTIVE: TrialChannel | None = None


class TrialChannel:
    """One trial's link to the pruner: logs its reports, reads its siblings', decides."""

    def __init__(
        self,
        client: MlflowClient,
        *,
        experiment_id: str,
        parent_run_id: str,
        run_id: str,
        trial: int,
        metric: str | None,
        direction: str = "maximize",
        pruner: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.run_id = run_id
        self.trial = trial
        self.metric = metric or "objective"
        self.sign = -1.0 if direction == "minimize" else 1.0  # rules see higher-is-better
        self.rule: PruningRule | None = make_rule(pruner)
        self.curve: list[tuple[int, float]] = []
        self.pruned_step: int | None = None
        self.reason: str | None = None
        self._finished: dict[str, list[tuple[int, float]]] = {}  # sibling run id -> curve
        self._warned = False

    def report(
        self, step: int, value: float | Mapping[str, Any], max_step: int | None = None
    ) -> bool:
        """Log ``value`` at ``step``; True if the trial should stop (and from then on)."""
        step = _as_step(step)
        number = self._number(value)
        if number is None or not math.isfinite(number):
            return self.pruned_step is not None
        self.client.log_metric(self.run_id, REPORT_METRIC, number, step=step)
        self.curve.append((step, number))
        if self.rule is None or self.pruned_step is not None:
            return self.pruned_step is not None
        own = [(s, self.sign * v) for s, v in self.curve]
        others = [[(s, self.sign * v) for s, v in c] for c in self._siblings()]
        decision = self.rule.decide(own, others, max_step)
        if not decision.stop:
            return False
        self.pruned_step, self.reason = step, decision.reason
        from mlflow.entities import RunTag

        self.client.log_batch(
            self.run_id,
            tags=[
                RunTag(TAG_PRUNED_STEP, str(step)),
                RunTag(TAG_PRUNE_REASON, decision.reason[:5000]),
            ],
        )
        log.info("Trial %d pruned at step %d: %s", self.trial, step, decision.reason)
        return True

    def _number(self, value: float | Mapping[str, Any]) -> float | None:
        if isinstance(value, Mapping):
            if self.metric not in value:
                if not self._warned:
                    log.warning(
                        "nas_plugin.report() got metrics %s, but the sweep optimises '%s': "
                        "nothing to prune on",
                        sorted(map(str, value)),
                        self.metric,
                    )
                    self._warned = True
                return None
            value = value[self.metric]
        item = getattr(value, "item", None)  # tensors and numpy scalars
        if callable(item):
            value = item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"nas_plugin.report() takes a number or a dict of metrics, not {value!r}"
            )
        return float(value)

    def _siblings(self) -> list[list[tuple[int, float]]]:
        """The reported curves of the sweep's other trials (finished ones read once)."""
        from nas_plugin.tracking.tags import TAG_STATUS, TAG_TRIAL

        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
            max_results=50000,
        )
        curves = []
        for run in runs:
            run_id, tags = run.info.run_id, run.data.tags
            # Not this trial (nor an interrupted earlier attempt of it after a resume).
            if run_id == self.run_id or tags.get(TAG_TRIAL) == str(self.trial):
                continue
            if tags.get(TAG_STATUS) == "interrupted" or REPORT_METRIC not in run.data.metrics:
                continue
            curve = self._finished.get(run_id)
            if curve is None:
                curve = _history(self.client, run_id)
                if run.info.status != "RUNNING":
                    self._finished[run_id] = curve
            curves.append(curve)
        return curves


def _history(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    points = sorted(
        client.get_metric_history(run_id, REPORT_METRIC), key=lambda m: (m.step, m.timestamp)
    )
    by_step: dict[int, float] = {}
    for metric in points:
        by_step[int(metric.step)] = float(metric.value)  # a step reported twice: the last
    return sorted(by_step.items())


def _as_step(step: Any) -> int:
    if isinstance(step, numbers.Integral) and not isinstance(step, bool):
        value = int(step)
    elif isinstance(step, float) and step.is_integer():
        value = int(step)
    else:
        raise ValueError(
            f"nas_plugin.report(step={step!r}): the step must be an integer (an epoch or a "
            "global step)"
        )
    if value < 0:
        raise ValueError(f"nas_plugin.report(step={value}): the step must be >= 0")
    return value


def active_channel() -> TrialChannel | None:
    """The channel of the trial running in this process, if any."""
    return _ACTIVE


@contextlib.contextmanager
def activate(channel: TrialChannel) -> Iterator[TrialChannel]:
    """Make ``channel`` the one :func:`report` talks to while the trial's job runs.

    A process-wide slot: every launcher runs one job at a time per process.
    """
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, channel
    try:
        yield channel
    finally:
        _ACTIVE = previous


def report(step: int, value: float | Mapping[str, Any], *, max_step: int | None = None) -> bool:
    """Report a trial's intermediate value; True if the trial should stop training now.

    ``value`` is one number (the sweep's objective metric) or a dict of metrics, from which the
    objective metric is taken. ``max_step`` is the step budget (the last epoch), which lets the
    ``curve`` rule extrapolate and ASHA skip a rung at the very end. Outside a NAS sweep this
    does nothing and returns False. Once True, it stays True for the rest of the trial.
    """
    channel = _ACTIVE
    if channel is None:
        return False
    return channel.report(step, value, max_step=max_step)
