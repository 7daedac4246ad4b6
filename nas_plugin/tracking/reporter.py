"""The reporter that records a trial for real: the active MLflow run, the sweep's pruner, and
MLflow's model flavors (see :mod:`nas_plugin.tasks.reporting` for the interface).

The sweeper installs it around every trial (:class:`~nas_plugin.tracking.trial.TrackedTask`),
around its own parent-run work, and ``run_outside_sweep`` around a single run. Code that calls
a task function itself, under its own ``mlflow.start_run()``, wraps the call in
:func:`mlflow_reporting` to have it recorded::

    with mlflow.start_run(), mlflow_reporting():
        run_vision_trial(cfg)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import mlflow

from nas_plugin.pruning.channel import report
from nas_plugin.tasks.reporting import TrialReporter, use_reporter


class MlflowReporter(TrialReporter):
    """Records into whichever MLflow run is active when called (nothing when none is), and
    reports epochs to the trial's pruning channel (a no-op outside a sweep)."""

    @property
    def recording(self) -> bool:
        return mlflow.active_run() is not None

    @property
    def logs_models(self) -> bool:
        return True

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.recording and tags:
            mlflow.set_tags(dict(tags))

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.recording and params:
            mlflow.log_params(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.recording and metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def report_epoch(
        self, step: int, value: float | Mapping[str, float], max_step: int | None = None
    ) -> bool:
        return report(step, value, max_step=max_step)

    def log_image_model(self, model: Any, input_example: Any) -> str | None:
        if not self.recording:
            return None
        from nas_plugin.tracking.model_logging import log_model

        return log_model(model, input_example)

    def log_text_model(
        self, model: Any, tokenizer: Any, max_length: int, input_example: Sequence[str]
    ) -> str | None:
        if not self.recording:
            return None
        # transformers' flavor is imported only by runs that log a text model.
        from nas_plugin.tracking.text_model import log_text_model

        return log_text_model(model, tokenizer, max_length, input_example)


@contextlib.contextmanager
def mlflow_reporting() -> Iterator[TrialReporter]:
    """Inside the block, training code records into the active MLflow run and its pruner."""
    with use_reporter(MlflowReporter()) as reporter:
        yield reporter
