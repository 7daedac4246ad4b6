"""Exact resume of a sweep that was killed: MLflow holds everything needed to continue it.

A sweep is identified by a fingerprint of its sweeper config, its command line and the app's
composed config. Running the same command again finds the parent run with that fingerprint that
is still RUNNING (an orderly end marks it FINISHED or FAILED, so RUNNING means the sweeper died)
and continues it: the finished trials are replayed to the strategy in their original order
(the seeded strategy proposes the same candidates again and is told the recorded results, in
the order it heard them the first time, so its state is rebuilt, not guessed), the interrupted
ones are run again with identical
overrides, and new trials continue the numbering under the same parent run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from nas_plugin.leaderboard import TrialRecord
from nas_plugin.objective import Objective
from nas_plugin.space import SearchSpace
from nas_plugin.tracking.trial import TAG_ENCODING, TAG_ERROR, TAG_STATUS, TAG_TRIAL

TAG_FINGERPRINT = "nas.fingerprint"
# The position at which the sweeper told the strategy a trial's result (asynchronous refill,
# where results arrive in an order set by timing): resume replays them in that order.
TAG_TOLD = "nas.told"
STATUS_INTERRUPTED = "interrupted"


def fingerprint(sweeper_cfg: dict[str, Any], arguments: list[str], job_cfg: Any) -> str:
    """What makes two invocations "the same sweep" (the run name and resume switch do not)."""
    settings = {k: v for k, v in sweeper_cfg.items() if k != "resume"}
    settings["mlflow"] = {
        k: v for k, v in (settings.get("mlflow") or {}).items() if k != "run_name"
    }
    blob = json.dumps([settings, sorted(arguments), job_cfg], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Replay:
    """The recorded trials of an unfinished sweep, by trial number."""

    parent_run_id: str
    finished: dict[int, TrialRecord] = field(default_factory=dict)
    interrupted: dict[int, str] = field(default_factory=dict)  # trial number -> stale run id
    told: dict[int, int] = field(default_factory=dict)  # trial number -> TAG_TOLD

    def tell_order(self) -> list[int]:
        """The finished trials in the order the strategy heard them; those it never heard
        (finished as the sweep died) last, by number."""
        return sorted(self.finished, key=lambda n: (n not in self.told, self.told.get(n, 0), n))

    @property
    def next_number(self) -> int:
        numbers = [*self.finished, *self.interrupted]
        return max(numbers) + 1 if numbers else 0


def find_unfinished(client: MlflowClient, experiment_id: str, print_: str) -> str | None:
    """The newest parent run with this fingerprint that is still RUNNING, if any."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_FINGERPRINT}` = '{print_}' and attributes.status = 'RUNNING'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def load_replay(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    space: SearchSpace,
    objective: Objective,
    mark_interrupted: bool = True,
) -> Replay:
    """Read the parent's trials back; mark the interrupted ones as such in MLflow.

    ``mark_interrupted=False`` only reads (a warm start reading another sweep, which may still
    be running, must not touch its runs): unfinished trials are left out.
    """
    replay = Replay(parent_run_id)
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=50000,
    )
    for run in runs:
        tags = run.data.tags
        if TAG_TRIAL not in tags:
            continue
        number = int(tags[TAG_TRIAL])
        status = tags.get(TAG_STATUS)
        if status in ("ok", "pruned", "failed") and run.info.status in ("FINISHED", "FAILED"):
            replay.finished[number] = record_from_run(run, number, space, objective)
            if TAG_TOLD in tags:
                replay.told[number] = int(tags[TAG_TOLD])
        elif status != STATUS_INTERRUPTED and mark_interrupted:
            # Killed mid-trial: keep the run for the record, but it counts for nothing.
            client.log_batch(run.info.run_id, tags=[RunTag(TAG_STATUS, STATUS_INTERRUPTED)])
            client.set_terminated(run.info.run_id, "KILLED")
            replay.interrupted[number] = run.info.run_id
    return replay


def record_from_run(run: Any, number: int, space: SearchSpace, objective: Objective) -> TrialRecord:
    """A finished trial as the sweeper books it, read back from its MLflow run."""
    tags, metrics, params = run.data.tags, dict(run.data.metrics), run.data.params
    architecture = json.loads(tags[TAG_ENCODING])
    record = TrialRecord(
        number=number,
        encoding=space.encode(architecture),
        architecture=architecture,
        overrides=[],
        status=tags[TAG_STATUS],
        metrics=metrics,
        run_id=run.info.run_id,
        error=tags.get(TAG_ERROR),
        seconds=metrics.get("trial_seconds"),
    )
    if "budget" in params:
        record.budget = float(params["budget"])
        record.rung = int(tags.get("nas.rung", 0))
        record.bracket = int(tags.get("nas.bracket", 0))
    if record.status == "pruned" and tags.get("nas.pruned_step") is not None:
        record.pruned_step = int(tags["nas.pruned_step"])
    if record.status in ("ok", "pruned"):
        record.value = metrics.get(objective.primary)
        record.score = objective.score(metrics)
    return record
