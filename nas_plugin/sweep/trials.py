"""Turn candidates into trials and run them: number, compose, launch, settle.

One job. The loops (:mod:`~nas_plugin.sweep.loop`, :mod:`~nas_plugin.sweep.refill`,
:mod:`~nas_plugin.sweep.rungs`) see only the :class:`Trials` interface: :class:`LaunchedTrials`
runs each trial as a Hydra job through the launcher and records it in MLflow;
:class:`InProcessTrials` calls a plain function in this process (the loops outside Hydra: tests,
notebooks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from nas_plugin.leaderboard import TrialRecord
from nas_plugin.objective import Objective
from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.sweep.plan import SweepPlan, format_value
from nas_plugin.sweep.replay import Replayer
from nas_plugin.tracking.resume import record_from_run
from nas_plugin.tracking.sweep_run import SweepRun, TrackingLostError
from nas_plugin.tracking.tags import TAG_STATUS
from nas_plugin.tracking.trial import TrialOutcome

log = logging.getLogger("nas_plugin.sweeper")


class Trials:
    """Number candidates (:meth:`prepare`, the sweeper's thread), run the undecided ones
    (:meth:`execute`, any thread), then :meth:`settle` them; :meth:`launch` does all three."""

    def __init__(
        self,
        space: SearchSpace,
        overrides: Callable[[Mapping[str, Any]], list[str]],
        replayer: Replayer | None = None,
    ) -> None:
        self.space = space
        self.overrides = overrides  # decoded architecture -> the trial's override strings
        self.replayer = replayer or Replayer()

    def launch(
        self, batch: list[Encoding], first_number: int, extra: dict[str, Any] | None = None
    ) -> list[TrialRecord]:
        """Run one batch; ``extra`` overrides (a budget) are set on every trial in it."""
        records = self.prepare(batch, first_number, extra)
        self.execute(records)
        return self.settle(records)

    def prepare(
        self, batch: list[Encoding], first_number: int, extra: dict[str, Any] | None = None
    ) -> list[TrialRecord]:
        """Number the candidates, rejected ones (their config does not compose) last; fill
        those a resumed sweep already finished."""
        candidates, rejected = [], []
        extra_overrides = [f"{k}={format_value(v)}" for k, v in (extra or {}).items()]
        for encoding in batch:
            architecture = self.space.decode(encoding)
            record = TrialRecord(
                number=-1,
                encoding=encoding,
                architecture=architecture,
                overrides=[*self.overrides(architecture), *extra_overrides],
            )
            try:
                self.check(record)
                candidates.append(record)
            except Exception as err:  # noqa: BLE001 - recorded as this trial's failure
                record.status, record.error = "failed", f"config does not compose: {err}"
                rejected.append(record)
        records = [*candidates, *rejected]
        for number, record in enumerate(records, start=first_number):
            record.number = number
            self.replayer.fill(record)
        return records

    def check(self, record: TrialRecord) -> None:
        """Raise if the trial cannot start (its config does not compose)."""

    def execute(self, records: list[TrialRecord]) -> None:
        raise NotImplementedError

    def settle(self, records: list[TrialRecord]) -> list[TrialRecord]:
        return sorted(records, key=lambda r: r.number)


class InProcessTrials(Trials):
    """Each trial is ``function(architecture) -> metrics`` called here; an exception fails it."""

    def __init__(
        self,
        space: SearchSpace,
        objective: Objective,
        function: Callable[[dict[str, Any]], Mapping[str, float]],
        replayer: Replayer | None = None,
    ) -> None:
        super().__init__(space, lambda decoded: [], replayer)
        self.objective = objective
        self.function = function

    def execute(self, records: list[TrialRecord]) -> None:
        for record in records:
            if record.status != "running":
                continue
            try:
                metrics = dict(self.function(record.architecture))
                record.score = self.objective.score(metrics)
            except Exception as err:  # noqa: BLE001 - a failed trial, as a failed job
                record.status, record.error = "failed", f"{type(err).__name__}: {err}"
                continue
            record.status, record.metrics = "ok", metrics
            record.value = metrics[self.objective.primary]


class LaunchedTrials(Trials):
    """Trials as Hydra jobs: one launch per run of consecutive numbers, recorded in MLflow."""

    def __init__(
        self,
        plan: SweepPlan,
        launch_jobs: Callable[..., Sequence[JobReturn]],
        compose: Callable[[list[str]], Any],
        sweep_run: SweepRun,
        strategy_name: str,
        replayer: Replayer | None = None,
    ) -> None:
        super().__init__(plan.space, plan.trial_overrides, replayer)
        self.plan = plan
        self.launch_jobs = launch_jobs  # launcher.launch(overrides, initial_job_idx=...)
        self.compose = compose
        self.sweep_run = sweep_run
        self.strategy_name = strategy_name
        self.composed_pairs: set[tuple[str, Any]] = set()

    def check(self, record: TrialRecord) -> None:
        """Compose a candidate's config before launching it, as Hydra's validate_batch_is_legal
        does, but only while it holds a (key, value) not composed before: composing costs tens
        of milliseconds, and the launcher composes every job again anyway."""
        pairs = {(k, value_kind(v)) for k, v in record.encoding}
        if pairs <= self.composed_pairs:
            return
        self.compose(list(record.overrides))
        self.composed_pairs |= pairs

    def execute(self, records: list[TrialRecord]) -> None:
        """Run the trials still undecided, one launch per run of consecutive numbers."""
        pending = [r for r in records if r.status == "running"]
        for group in consecutive(pending):
            try:
                returns = self.launch_jobs(
                    [r.overrides for r in group], initial_job_idx=group[0].number
                )
            except Exception as err:  # noqa: BLE001 - a dead worker must not end the sweep
                self.recover_lost_batch(group, err)
                continue
            for record, job in zip(group, returns, strict=True):
                read_job_return(record, job)
                if record.ok:
                    record.score = self.plan.objective.score(record.metrics)

    def settle(self, records: list[TrialRecord]) -> list[TrialRecord]:
        failed = next((r for r in records if r.status == "failed"), None)
        if failed is not None and self.sweep_run.unreachable() is not None:
            # Not the trial's fault: stop before launching more trials into a dead store.
            raise TrackingLostError(f"trial {failed.number} failed: {failed.error}")
        for record in records:
            if record.status == "failed" and record.run_id is None:
                record.run_id = self.sweep_run.record_unstarted_failure(record, self.strategy_name)
        return super().settle(records)

    def recover_lost_batch(self, group: list[TrialRecord], err: Exception) -> None:
        """The launcher raised (e.g. a joblib worker was killed): keep what finished in MLflow,
        record the rest as failed with the cause, and let the sweep go on."""
        cause = f"the job was lost ({type(err).__name__}: {err})"
        log.warning("A batch of %d trial(s) ended abnormally: %s", len(group), cause)
        for record in group:
            run = self.sweep_run.trial_run(record.number)
            finished = run is not None and run.data.tags.get(TAG_STATUS) in ("ok", "pruned")
            if finished and run.info.status == "FINISHED":
                known = record_from_run(run, record.number, self.plan.space, self.plan.objective)
                for name in ("status", "value", "score", "metrics", "run_id", "seconds"):
                    setattr(record, name, getattr(known, name))
                record.pruned_step = known.pruned_step
                continue
            record.status, record.error = "failed", cause
            if run is not None:
                record.run_id = run.info.run_id
                self.sweep_run.mark_lost(run.info.run_id, cause)


def consecutive(records: list[TrialRecord]) -> list[list[TrialRecord]]:
    """Runs of consecutive trial numbers: each is one launch (job indices are contiguous)."""
    groups: list[list[TrialRecord]] = []
    for record in records:
        if groups and groups[-1][-1].number + 1 == record.number:
            groups[-1].append(record)
        else:
            groups.append([record])
    return groups


def read_job_return(record: TrialRecord, job: JobReturn) -> None:
    # JobReturn.return_value re-raises a failed job's exception; _return_value does not.
    value = job._return_value
    if job.status == JobStatus.COMPLETED and isinstance(value, TrialOutcome):
        # A pruned trial counts with the score it reached (see nas_plugin.pruning).
        record.status = "ok" if value.pruned_step is None else "pruned"
        record.value, record.pruned_step = value.value, value.pruned_step
        record.metrics, record.run_id, record.seconds = value.metrics, value.run_id, value.seconds
        return
    record.status = "failed"
    if isinstance(value, BaseException):
        record.error = f"{type(value).__name__}: {value}"
        record.run_id = getattr(value, "nas_run_id", None)
    else:
        record.error = f"job ended with status {job.status} and returned {value!r}"


def value_kind(value: Any) -> Any:
    # OmegaConf checks a number or a bool by its type only (no range validators), so one
    # composition per type suffices; a string may be an enum member, so each string counts.
    if isinstance(value, bool | int | float):
        return (type(value).__name__,)
    return value
