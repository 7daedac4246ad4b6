"""The sweeper side of MLflow: the store, the sweep's parent run, its summary and the registry."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from hydra.errors import CompactHydraException
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from nas_plugin.leaderboard import TrialRecord, best_of, to_csv
from nas_plugin.objective import Objective
from nas_plugin.tracking.resume import TAG_FINGERPRINT, TAG_TOLD
from nas_plugin.tracking.trial import (
    TAG_ENCODING,
    TAG_MODEL_URI,
    TAG_STATUS,
    TAG_TRIAL,
    TAG_WORKER,
    TrialContext,
    worker_name,
)

TAG_SWEEP = "nas.sweep"
TAG_BEST_RUN = "nas.best_run_id"
TAG_BEST_TRIAL = "nas.best_trial"
TAG_REGISTERED = "nas.registered_model"
TAG_PARETO = "nas.pareto_front"


class TrackingError(CompactHydraException, RuntimeError):
    """The tracking store cannot be used; raised before any trial is launched."""


def resolve_tracking_uri(configured: str | None) -> str:
    """The configured URI, else MLflow's default, with relative local paths made absolute."""
    uri = configured or mlflow.get_tracking_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///") :]
        if path and path != ":memory:" and not path.startswith("/"):
            return f"sqlite:///{Path(path).resolve()}"
        return uri
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme == "file" else uri
        return Path(local).resolve().as_uri()
    return uri


class TrackingLostError(TrackingError):
    """The tracking store stopped answering in the middle of a sweep; nothing more can be
    recorded, so the sweep stops (finished trials are already in the store)."""


def probe(uri: str, client: MlflowClient) -> str | None:
    """None if the store answers now, else why not (one quick try, no retries)."""
    try:
        if urlparse(uri).scheme in ("http", "https"):
            # One quick probe: MLflow's own client retries an absent server for minutes.
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10):
                pass
        else:
            client.search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure here means "unusable store"
        return f"{type(err).__name__}: {err}"
    return None


def open_store(uri: str) -> MlflowClient:
    """A client for ``uri`` that has answered once, or a ``TrackingError`` that says why not."""
    client = MlflowClient(uri)
    problem = probe(uri, client)
    if problem is None and urlparse(uri).scheme in ("http", "https"):
        try:  # the server is up; does it serve the tracking API?
            client.search_experiments(max_results=1)
        except Exception as err:  # noqa: BLE001 - any failure here means "unusable store"
            problem = f"{type(err).__name__}: {err}"
    if problem is not None:
        raise TrackingError(
            f"MLflow tracking store {uri!r} (hydra.sweeper.mlflow.tracking_uri) cannot be "
            f"reached: {problem}"
        )
    return client


class SweepRun:
    """The parent run of one sweep: created at the start, summarised at the end."""

    def __init__(self, client: MlflowClient, uri: str, experiment: str) -> None:
        self.client = client
        self.uri = uri
        self.experiment_name = experiment
        existing = client.get_experiment_by_name(experiment)
        self.experiment_id = (
            existing.experiment_id if existing else client.create_experiment(experiment)
        )
        self.run_id = ""

    def start(
        self,
        run_name: str | None,
        params: dict[str, Any],
        files: dict[str, str],
        fingerprint: str,
    ) -> str:
        name = run_name or time.strftime("sweep-%Y%m%d-%H%M%S")
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                MLFLOW_RUN_NAME: name,
                TAG_SWEEP: "parent",
                TAG_WORKER: worker_name(),
                TAG_FINGERPRINT: fingerprint,
            },
        )
        self.run_id = run.info.run_id
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # log_batch takes at most 100 params a call
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        for path, text in files.items():
            self.client.log_text(self.run_id, text, path)
        return self.run_id

    def attach(self, run_id: str) -> None:
        """Continue an unfinished sweep's parent run (exact resume)."""
        self.run_id = run_id
        resumes = self.client.get_run(run_id).data.tags.get("nas.resumed", "0")
        self.client.log_batch(
            run_id,
            tags=[RunTag("nas.resumed", str(int(resumes) + 1)), RunTag(TAG_WORKER, worker_name())],
        )

    def unreachable(self) -> str | None:
        """None if the store answers now, else why not."""
        return probe(self.uri, self.client)

    def lost_message(self, problem: str, cause: str, finished: int) -> str:
        """What to tell the user when the store went away mid-sweep, after MLflow's retries."""
        return (
            f"MLflow tracking store {self.uri!r} (hydra.sweeper.mlflow.tracking_uri) stopped "
            f"answering during the sweep: {problem} (after MLflow's retries: {cause}). "
            f"The sweep stops; the {finished} trial(s) that "
            f"finished before are in the store, and the parent run {self.run_id} stays "
            "RUNNING, so running the same command again once the store is back resumes the "
            "sweep. MLflow's retry window is set by MLFLOW_HTTP_REQUEST_MAX_RETRIES, "
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR and MLFLOW_HTTP_REQUEST_TIMEOUT."
        )

    def trial_context(self, **kwargs: Any) -> TrialContext:
        return TrialContext(
            tracking_uri=self.uri,
            experiment_id=self.experiment_id,
            parent_run_id=self.run_id,
            **kwargs,
        )

    def record_unstarted_failure(self, record: TrialRecord, strategy: str) -> str:
        """A FAILED child run for a trial that died before it could open its own run."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{record.number:03d}",
            tags={
                "mlflow.parentRunId": self.run_id,
                MLFLOW_RUN_NAME: f"trial-{record.number:03d}",
                TAG_TRIAL: str(record.number),
                TAG_STATUS: "failed",
                "nas.strategy": strategy,
                "nas.error": (record.error or "")[:5000],
                TAG_ENCODING: json.dumps(record.architecture, default=str)[:5000],
            },
        )
        self.client.log_batch(
            run.info.run_id,
            params=[Param(k, str(v)[:6000]) for k, v in record.architecture.items()][:100],
        )
        self.client.log_text(
            run.info.run_id, "\n".join(record.overrides) + "\n", "trial/overrides.txt"
        )
        self.client.set_terminated(run.info.run_id, "FAILED")
        return run.info.run_id

    def trial_run(self, number: int) -> Any | None:
        """The newest run of trial ``number`` in this sweep, if the job got to create one."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}' and "
            f"tags.`{TAG_TRIAL}` = '{number}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def mark_lost(self, run_id: str, error: str) -> None:
        """A trial whose job died without reporting (a killed worker): FAILED, with the cause."""
        self.client.log_batch(
            run_id, tags=[RunTag(TAG_STATUS, "failed"), RunTag("nas.error", error[:5000])]
        )
        self.client.set_terminated(run_id, "FAILED")

    def tag_told(self, record: TrialRecord, position: int) -> None:
        """Record when the strategy heard this trial (before it does: see resume.TAG_TOLD)."""
        if record.run_id is not None:
            self.client.set_tag(record.run_id, TAG_TOLD, str(position))

    def tag_rung(self, record: TrialRecord, budget_key: str) -> None:
        """A multi-fidelity trial's budget (param), rung and bracket (tags)."""
        if record.run_id is None:
            return
        self.client.log_batch(
            record.run_id,
            params=[Param("budget", str(record.budget)), Param("budget_key", budget_key)],
            tags=[RunTag("nas.rung", str(record.rung)), RunTag("nas.bracket", str(record.bracket))],
        )

    def finish(
        self,
        records: list[TrialRecord],
        objective: Objective,
        leaderboard_text: str,
        status: str,
        note: str | None = None,
    ) -> None:
        metric = objective.primary
        self.client.log_text(self.run_id, to_csv(records, metric), "leaderboard.csv")
        self.client.log_text(self.run_id, leaderboard_text, "leaderboard.txt")
        now = int(time.time() * 1000)
        ok = [r for r in records if r.ok]
        metrics = [
            Metric("trials_finished", len(ok), now, 0),
            Metric("trials_failed", len(records) - len(ok), now, 0),
            Metric("trials_pruned", sum(1 for r in records if r.status == "pruned"), now, 0),
        ]
        tags = []
        best = best_of(records)
        if best is not None:
            metrics.append(Metric(f"best_{metric}", best.value, now, 0))
            tags += [
                RunTag(TAG_BEST_RUN, best.run_id or ""),
                RunTag(TAG_BEST_TRIAL, str(best.number)),
            ]
        if objective.multi:
            front = [r for r in ok if r.pareto_rank == 0]
            metrics.append(Metric("pareto_front_size", len(front), now, 0))
            self.client.log_text(self.run_id, to_csv(front, metric), "pareto_front.csv")
            for record in front:
                self.client.set_tag(record.run_id, TAG_PARETO, "true")
        if note:
            tags.append(RunTag("nas.note", note[:5000]))
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)
        self.client.set_terminated(self.run_id, status)

    def register(
        self,
        record: TrialRecord,
        model_name: str,
        alias: str | None,
        objective: Objective,
        note: str | None = None,
    ) -> str | None:
        """Register a trial's logged model; its version, or None if the trial logged none."""
        model_uri = self.client.get_run(record.run_id).data.tags.get(TAG_MODEL_URI)
        if not model_uri:
            return None
        # register_model resolves logged-model URIs (models:/m-...) through the global store.
        mlflow.set_tracking_uri(self.uri)
        version = str(mlflow.register_model(model_uri, model_name).version)
        if alias:
            self.client.set_registered_model_alias(model_name, alias, version)
        tags = {
            "run_id": record.run_id,
            "trial": str(record.number),
            "objective": ",".join(objective.metrics) or objective.primary,
            "architecture": json.dumps(record.architecture, default=str)[:5000],
            **{f"metric.{k}": str(v) for k, v in record.metrics.items()},
        }
        if record.pareto_rank is not None:
            tags["pareto_front"] = str(record.pareto_rank == 0).lower()
        if note:
            tags["constraint"] = note
        for key, value in tags.items():
            self.client.set_model_version_tag(model_name, version, key, value)
        registered = self.client.get_run(self.run_id).data.tags.get(TAG_REGISTERED)
        entry = f"{model_name}/{version}"
        self.client.set_tag(
            self.run_id, TAG_REGISTERED, f"{registered},{entry}" if registered else entry
        )
        return version
