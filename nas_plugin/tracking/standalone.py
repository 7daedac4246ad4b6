"""Run a pipeline's task function on its own (no ``-m``) and still record it in MLflow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlflow
from omegaconf import DictConfig, OmegaConf

from nas_plugin.tracking.reporter import mlflow_reporting
from nas_plugin.tracking.sweep_run import resolve_tracking_uri


def run_outside_sweep(cfg: DictConfig, task: Callable[[DictConfig], Any]) -> Any:
    """Call ``task(cfg)`` inside an MLflow run: the sweep's trial run if one is active, else a
    run of its own in the experiment that ``hydra.sweeper.mlflow`` names. The task's reports
    (per-epoch metrics, the model) go to that run."""
    if mlflow.active_run() is not None:
        with mlflow_reporting():
            return task(cfg)
    from hydra.core.hydra_config import HydraConfig

    settings = OmegaConf.select(HydraConfig.get(), "sweeper.mlflow", default=None) or {}
    mlflow.set_tracking_uri(resolve_tracking_uri(settings.get("tracking_uri")))
    mlflow.set_experiment(settings.get("experiment") or "nas")
    with mlflow.start_run(run_name="single-run"), mlflow_reporting():
        mlflow.log_text(OmegaConf.to_yaml(cfg), "trial/config.yaml")
        result = task(cfg)
        if isinstance(result, dict):
            mlflow.log_metrics({k: float(v) for k, v in result.items()})
        return result
