"""The end of a sweep: the leaderboard, the parent run's summary, the registered model(s)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import mlflow
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from nas_plugin.estimators import make_estimator
from nas_plugin.estimators.base import Estimator
from nas_plugin.leaderboard import TrialRecord, best_of, ranked, render
from nas_plugin.sweep.plan import SweepPlan
from nas_plugin.tracking.reporter import mlflow_reporting
from nas_plugin.tracking.sweep_run import SweepRun
from nas_plugin.tracking.tags import TAG_MODEL_URI

log = logging.getLogger("nas_plugin.sweeper")

Compose = Callable[[list[str]], DictConfig]


def finish_sweep(
    plan: SweepPlan,
    sweep_run: SweepRun,
    records: list[TrialRecord],
    sweeper_cfg: dict[str, Any],
    status: str,
    note: str | None,
    compose: Compose,
) -> None:
    """Print and log the leaderboard, close the parent run, register the best model."""
    rows = int(sweeper_cfg.get("leaderboard_rows") or 10)
    columns = tuple(sweeper_cfg.get("leaderboard_columns") or ())
    table = render(records, plan.objective, rows, columns)
    print(table, flush=True)
    sweep_run.finish(records, plan.objective, table, status, note)
    best = best_of(records)
    if best is not None:
        log.info(
            "Best: trial %d, %s=%.4g, run %s",
            best.number,
            plan.metric_name,
            best.value,
            best.run_id,
        )
        if plan.objective.multi:
            front = sum(1 for r in records if r.pareto_rank == 0)
            log.info(
                "Pareto front: %d trials (tag nas.pareto_front=true, artifact pareto_front.csv)",
                front,
            )
        registry = sweeper_cfg.get("registry") or {}
        if registry.get("enabled", True):
            register_best(plan, sweep_run, records, registry, compose)
    log.info(
        "Compare the trials in the MLflow UI: mlflow ui --backend-store-uri %s  then open "
        "http://127.0.0.1:5000/#/experiments/%s/runs/%s",
        sweep_run.uri,
        sweep_run.experiment_id,
        sweep_run.run_id,
    )


def register_best(
    plan: SweepPlan,
    sweep_run: SweepRun,
    records: list[TrialRecord],
    registry: dict[str, Any],
    compose: Compose,
) -> None:
    """Register the best trial (or every Pareto-front member) that meets the constraint."""
    name = registry.get("model_name") or sweep_run.experiment_name
    alias = registry.get("alias") or "champion"
    eligible = [
        r for r in ranked(records) if plan.constraint is None or plan.constraint.holds(r.metrics)
    ]
    if plan.objective.multi and plan.pareto == "front":
        chosen = [r for r in eligible if r.pareto_rank == 0]
    else:
        chosen = eligible[:1]
    if not chosen:
        log.info(
            "No trial satisfies the registry constraint '%s'; nothing registered.",
            plan.constraint,
        )
        return
    versions = []
    for position, record in enumerate(chosen):
        log_missing_model(plan, sweep_run, record, compose)
        version = sweep_run.register(
            record,
            name,
            alias if position == 0 else None,
            plan.objective,
            note=str(plan.constraint) if plan.constraint else None,
        )
        if version is None:
            log.info(
                "Trial %d logged no model, so it was not registered; call "
                "nas_plugin.log_model(model, input_example) in the task function.",
                record.number,
            )
            continue
        versions.append(version)
    if versions:
        log.info(
            "Registered %s as '%s' version(s) %s, alias '%s' on version %s: "
            "mlflow.pyfunc.load_model('models:/%s@%s')",
            "the Pareto front" if len(chosen) > 1 else "the best model",
            name,
            ", ".join(versions),
            alias,
            versions[0],
            name,
            alias,
        )


def log_missing_model(
    plan: SweepPlan, sweep_run: SweepRun, record: TrialRecord, compose: Compose
) -> None:
    """A trial about to be registered that logged no model (estimator=supernet logs none per
    trial, to stay cheap): the estimator logs it now, into the trial's run, if the app's
    ``log_model`` is true. A failure is a warning: the sweep's results stand."""
    end_time = None
    try:
        estimator = make_estimator(plan.estimator_config)
        if type(estimator).log_best_model is Estimator.log_best_model:
            return  # this estimator's trials log their own models (or none at all)
        run = sweep_run.client.get_run(record.run_id)
        if run.data.tags.get(TAG_MODEL_URI):
            return
        cfg = compose(record.overrides or plan.trial_overrides(record.architecture))
        if not OmegaConf.select(cfg, "log_model", default=False):
            return
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]  # as Hydra hands the job its config
        mlflow.set_tracking_uri(sweep_run.uri)
        # The trial's own run, resumed (it keeps its parent tag), then given back its status
        # and end time: the model lands beside the trial's metrics.
        end_time = run.info.end_time
        with (
            mlflow.start_run(run_id=record.run_id, nested=mlflow.active_run() is not None),
            mlflow_reporting(),
        ):
            logged = estimator.log_best_model(cfg)
        if logged:
            log.info("Logged trial %d's model (estimator %s).", record.number, estimator.name)
    except Exception as err:  # noqa: BLE001 - the sweep's results must survive this
        log.warning(
            "Could not log the model of trial %d (run %s), so it cannot be registered; the "
            "sweep's results and leaderboard are kept. %s: %s",
            record.number,
            record.run_id,
            type(err).__name__,
            err,
        )
    if end_time is not None:
        try:
            sweep_run.client.set_terminated(record.run_id, "FINISHED", end_time)
        except Exception:  # noqa: BLE001 - the store may be gone; nothing more to keep
            pass
