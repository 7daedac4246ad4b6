"""The job side of a trial: one MLflow child run around the user's task function.

The sweeper hands the launcher a :class:`TrackedTask` in place of the app's task function. It is
picklable and carries everything the job needs (tracking URI, parent run, search-space keys), so
it behaves the same in the sweeper's process, in a joblib worker or on a remote machine. While
the task function runs, the trial's run is MLflow's active run: ``mlflow.log_metric`` and
:func:`nas_plugin.log_model` inside the app land in the trial.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from omegaconf import DictConfig, OmegaConf

from nas_plugin.estimators import make_estimator
from nas_plugin.pruning.channel import TrialChannel, activate
from nas_plugin.tracking.reporter import mlflow_reporting
from nas_plugin.tracking.secrets import is_secret_key, mask_override, mask_secrets
from nas_plugin.tracking.tags import (  # noqa: F401 - re-exported: the tags' old home
    STATUS_FAILED,
    STATUS_OK,
    STATUS_PRUNED,
    STATUS_RUNNING,
    TAG_ENCODING,
    TAG_ERROR,
    TAG_ESTIMATOR,
    TAG_MODEL_URI,
    TAG_STATUS,
    TAG_STRATEGY,
    TAG_TRIAL,
    TAG_WORKER,
)


class TrialResultError(ValueError):
    """The task function returned something the sweep cannot rank (NaN, not a number...)."""


class TrialTimeoutError(TimeoutError):
    """A trial ran past ``hydra.sweeper.trial_timeout``."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``TrialTimeoutError`` in the trial once ``seconds`` have passed.

    Uses SIGALRM, so it works where jobs run in a process's main thread (the basic, joblib and
    submitit launchers); elsewhere the limit is not enforced and a warning says so.
    """
    if not seconds:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        warnings.warn(
            "trial_timeout needs the job to run in a main thread; not enforced", stacklevel=2
        )
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TrialTimeoutError(f"the trial ran past hydra.sweeper.trial_timeout={seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class TrialContext:
    """What every job of one sweep needs to know; built by the sweeper, pickled to the jobs."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    space_keys: tuple[str, ...]
    # The metric a plain-number result is named by; null: "objective".
    metric: str | None
    strategy: str
    # What the trial logs about its estimator (``Estimator.describe()``).
    estimator: dict[str, Any] = field(default_factory=dict)
    # The estimator's config: the job rebuilds it to run the trial's body.
    estimator_config: dict[str, Any] = field(default_factory=lambda: {"name": "full"})
    # Metrics a successful trial must report as finite numbers (objectives and reward cost).
    required_metrics: tuple[str, ...] = ()
    # Seconds a trial may run before it is stopped and recorded as failed; None: no limit.
    timeout_s: float | None = None
    # The objective's direction and hydra.sweeper.pruner: the job decides on pruning itself.
    direction: str = "maximize"
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "none"})
    # hydra.sweeper.gpus_per_trial's plan (nas_plugin.hardware.gpu_slots.GpuPlan); None: off.
    gpus: Any = None


@dataclass
class TrialOutcome:
    """What a finished job returns to the sweeper."""

    run_id: str
    metrics: dict[str, float]
    value: float
    seconds: float
    # The step at which the pruner stopped the trial; None: it ran to its end.
    pruned_step: int | None = None


class TrackedTask:
    """Wraps an app's task function so every call is one MLflow child run of the sweep."""

    def __init__(self, task_function: Callable[[DictConfig], Any], context: TrialContext) -> None:
        self.task_function = task_function
        self.context = context

    def __call__(self, cfg: DictConfig) -> TrialOutcome:
        from hydra.core.hydra_config import HydraConfig

        from nas_plugin.hardware.gpu_slots import use_gpus

        # First thing, before anything initialises CUDA in this process (see gpu_slots).
        gpu_tags = use_gpus(self.context.gpus)
        hydra_cfg = HydraConfig.get()
        trial = int(hydra_cfg.job.num)
        overrides = list(hydra_cfg.overrides.task)
        ctx = self.context
        mlflow.set_tracking_uri(ctx.tracking_uri)
        client = MlflowClient(ctx.tracking_uri)
        architecture = active_architecture(cfg, ctx.space_keys, overrides)
        run = client.create_run(
            ctx.experiment_id,
            run_name=f"trial-{trial:03d}",
            tags={
                MLFLOW_PARENT_RUN_ID: ctx.parent_run_id,
                MLFLOW_RUN_NAME: f"trial-{trial:03d}",
                TAG_TRIAL: str(trial),
                TAG_STATUS: STATUS_RUNNING,
                TAG_STRATEGY: ctx.strategy,
                TAG_ESTIMATOR: str(ctx.estimator.get("name", "")),
                TAG_ENCODING: json.dumps(architecture, default=str)[:5000],
                TAG_WORKER: worker_name(),
                **gpu_tags,
            },
        )
        run_id = run.info.run_id
        params = {**architecture, **{f"estimator.{k}": v for k, v in ctx.estimator.items()}}
        params = {k: ("***" if is_secret_key(k) else v) for k, v in params.items()}
        client.log_batch(run_id, params=[Param(k, _param_text(v)) for k, v in params.items()])
        _log_trial_files(client, run_id, cfg, overrides, architecture)
        channel = TrialChannel(
            client,
            experiment_id=ctx.experiment_id,
            parent_run_id=ctx.parent_run_id,
            run_id=run_id,
            trial=trial,
            metric=ctx.metric,
            direction=ctx.direction,
            pruner=ctx.pruner,
        )
        started = time.perf_counter()
        try:
            # Leaving the block ends the run as FINISHED, or FAILED if the task raised; a
            # pruned trial ends FINISHED too (it returned a valid result for a shorter budget).
            with (
                mlflow.start_run(run_id=run_id),
                time_limit(ctx.timeout_s),
                activate(channel),
                mlflow_reporting(),
            ):
                estimator = make_estimator(ctx.estimator_config)
                returned = estimator.run_job(cfg, self.task_function)
                metrics, value = parse_result(returned, ctx.metric, ctx.required_metrics)
        except BaseException as err:
            record_failure(client, run_id, err)
            # Lets the sweeper find the run even when the exception crossed a process boundary.
            err.nas_run_id = run_id  # type: ignore[attr-defined]
            raise
        seconds = time.perf_counter() - started
        client.log_batch(
            run_id,
            metrics=_final_metrics(client, run_id, {**metrics, "trial_seconds": seconds}),
            tags=[RunTag(TAG_STATUS, STATUS_OK if channel.pruned_step is None else STATUS_PRUNED)],
        )
        return TrialOutcome(
            run_id=run_id,
            metrics=metrics,
            value=value,
            seconds=seconds,
            pruned_step=channel.pruned_step,
        )


def _final_metrics(client: MlflowClient, run_id: str, returned: dict[str, float]) -> list[Metric]:
    """The returned metrics the run does not already show as its latest values.

    A task that logged ``val_accuracy`` per epoch keeps a clean history; a returned value that
    differs from the last logged one goes after it, so the run's latest value is the result.
    """
    now = int(time.time() * 1000)
    latest = client.get_run(run_id).data.metrics
    out = []
    for key, value in returned.items():
        if key not in latest:
            out.append(Metric(key, value, now, 0))
        elif latest[key] != value:
            last_step = max(m.step for m in client.get_metric_history(run_id, key))
            out.append(Metric(key, value, now, last_step + 1))
    return out


def worker_name() -> str:
    """``host:pid`` of this process: which machine and process ran a trial (or the sweep)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def active_architecture(
    cfg: DictConfig, space_keys: tuple[str, ...], overrides: list[str]
) -> dict[str, Any]:
    """The searched keys this trial set (inactive conditional keys are not overridden)."""
    overridden = {line.split("=", 1)[0].lstrip("+~") for line in overrides}
    architecture = {}
    for key in space_keys:
        if key in overridden:
            value = OmegaConf.select(cfg, key)
            if isinstance(value, DictConfig | list) or OmegaConf.is_config(value):
                value = OmegaConf.to_container(value)
            architecture[key] = value
    return architecture


def parse_result(
    returned: Any, metric: str | None, required: tuple[str, ...] = ()
) -> tuple[dict[str, float], float]:
    """``(all metrics, the primary objective's value)`` from what a task function returned.

    ``required`` metrics (every objective, a reward's cost) must be there and finite.
    """
    name = metric or "objective"
    if isinstance(returned, Mapping):
        metrics = {}
        for key, value in returned.items():
            number = _as_float(value)
            if number is not None:
                metrics[str(key)] = number
        if metric is None:
            raise TrialResultError(
                f"the task function returned a dict with keys {sorted(map(str, returned))}; set "
                "hydra.sweeper.objective.metric to the key to optimise"
            )
        for key in dict.fromkeys((metric, *required)):
            if key not in returned:
                raise TrialResultError(
                    f"the task function's result has no metric '{key}' (needed by "
                    f"hydra.sweeper.objective); it returned keys {sorted(map(str, returned))}"
                )
            if key not in metrics:
                raise TrialResultError(
                    f"metric '{key}' is {returned[key]!r}, which is not a number"
                )
    else:
        value = _as_float(returned)
        if value is None:
            raise TrialResultError(
                f"the task function returned {returned!r} ({type(returned).__name__}); return a "
                "number or a dict of metrics"
            )
        if [k for k in required if k != name]:
            raise TrialResultError(
                f"the task function returned one number, but hydra.sweeper.objective needs the "
                f"metrics {list(required)}: return a dict"
            )
        metrics = {name: value}
    for key in dict.fromkeys((name, *required)):
        if not math.isfinite(metrics[key]):
            raise TrialResultError(f"the trial's {key} is {metrics[key]}, not a finite number")
    return metrics, metrics[name]


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    item = getattr(value, "item", None)  # numpy scalars and one-element tensors
    if callable(item):
        try:
            number = item()
        except (ValueError, RuntimeError):
            return None
        return float(number) if isinstance(number, int | float) else None
    return None


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:6000]  # MLflow's limit on a param value


def _log_trial_files(
    client: MlflowClient,
    run_id: str,
    cfg: DictConfig,
    overrides: list[str],
    architecture: dict[str, Any],
) -> None:
    # One artifact upload for the three files: each upload is a round trip to the store.
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        plain = OmegaConf.to_container(cfg, resolve=False)
        (root / "config.yaml").write_text(OmegaConf.to_yaml(mask_secrets(plain)))
        (root / "overrides.txt").write_text("\n".join(map(mask_override, overrides)) + "\n")
        (root / "architecture.json").write_text(json.dumps(architecture, indent=2, default=str))
        client.log_artifacts(run_id, folder, "trial")


def record_failure(client: MlflowClient, run_id: str, err: BaseException) -> None:
    message = f"{type(err).__name__}: {err}"
    try:
        client.log_text(run_id, "".join(traceback.format_exception(err)), "trial/error.txt")
        client.log_batch(
            run_id, tags=[RunTag(TAG_STATUS, STATUS_FAILED), RunTag(TAG_ERROR, message[:5000])]
        )
        client.set_terminated(run_id, "FAILED")
    except Exception:  # noqa: BLE001 - the trial's own error is the one to report
        pass
