"""How training code tells the world what happened, without knowing who listens.

Training loops (``nas_plugin.tasks``, the supernets' searches) report tags, params, per-epoch
metrics and the trained model through :func:`current_reporter`; they import neither MLflow nor
the pruner. The tracking layer installs the reporter that records for real
(:class:`nas_plugin.tracking.reporter.MlflowReporter`: an MLflow run, the sweep's pruner, the
model flavors) around each trial with :func:`use_reporter`. Outside of that, the reporter is a
:class:`TrialReporter` that records nothing and never prunes, so a task function also runs on
its own, in a notebook or a unit test.

A context variable rather than a global: the reporter follows the trial's thread and context,
and leaving ``use_reporter`` restores the one before it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from typing import Any


class TrialReporter:
    """Where a trial's results go; this base class records nothing and never prunes.

    ``recording`` says whether anything is kept: a task skips work that only serves the record
    (tokenizer tags, the model export) when it is False.
    """

    @property
    def recording(self) -> bool:
        return False

    @property
    def logs_models(self) -> bool:
        """Whether ``log_image_model``/``log_text_model`` log anything under an active run."""
        return False

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Tag the trial (strings: what ran it, on which device, with which tokenizer...)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the trial's inputs (the architecture's values)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record numbers; ``step`` is the epoch (1-based) for per-epoch curves."""

    def report_epoch(
        self, step: int, value: float | Mapping[str, float], max_step: int | None = None
    ) -> bool:
        """Hand the epoch's value (or metrics) to the sweep's pruner; True means stop now."""
        return False

    def log_image_model(self, model: Any, input_example: Any) -> str | None:
        """Log a trained torch model (raw images in) from the CPU, so that it loads and predicts
        on a CPU-only machine (the model stays on its device), and return its model URI, or
        None."""
        return None

    def log_text_model(
        self, model: Any, tokenizer: Any, max_length: int, input_example: Sequence[str]
    ) -> str | None:
        """Log a transformers classifier with its tokenizer (raw text in); its URI, or None."""
        return None


# The reporter has no state, so one shared instance serves every context without one.
_RECORDS_NOTHING = TrialReporter()
_REPORTER: contextvars.ContextVar[TrialReporter | None] = contextvars.ContextVar(
    "nas_plugin_trial_reporter", default=None
)


def current_reporter() -> TrialReporter:
    """The reporter of the trial running in this context (a recording-nothing one if none)."""
    return _REPORTER.get() or _RECORDS_NOTHING


@contextlib.contextmanager
def use_reporter(reporter: TrialReporter) -> Iterator[TrialReporter]:
    """Make ``reporter`` the current one inside the block; the previous one comes back after."""
    token = _REPORTER.set(reporter)
    try:
        yield reporter
    finally:
        _REPORTER.reset(token)


def require_model_logging(what: str) -> TrialReporter:
    """The current reporter, or a clear error, before any training, if it cannot log the models
    that ``what`` exists to deliver."""
    reporter = current_reporter()
    if not reporter.logs_models:
        raise RuntimeError(
            f"{what} logs models, and no reporter that logs them is installed: run it inside a "
            "NAS sweep, through its pipeline, or inside "
            "`with nas_plugin.tracking.reporter.mlflow_reporting():`"
        )
    return reporter


class EpochLoop:
    """Epochs ``1..epochs`` that stop coming once the sweep's pruner says stop::

        loop = EpochLoop(cfg.train.epochs)
        for epoch in loop:
            train_one_epoch(model)
            loop.report({"val_accuracy": evaluate(model)})   # or one number
        return {"val_accuracy": ..., "epochs": loop.epochs_done}

    Reports go to the current reporter (:func:`current_reporter`): inside a NAS sweep, the
    sweep's pruner; outside one (or with ``pruner=none``) every epoch runs. A dict of metrics is
    reported as the sweep's objective metric, so one call serves whatever the sweep optimises.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = int(epochs)
        self.epoch = 0
        self.pruned = False

    def __iter__(self) -> Iterator[int]:
        for epoch in range(1, self.epochs + 1):
            if self.pruned:
                return
            self.epoch = epoch
            yield epoch

    @property
    def epochs_done(self) -> int:
        return self.epoch

    def report(self, value: float | Mapping[str, float]) -> bool:
        """Report this epoch's value; True if the trial is pruned (the loop then ends)."""
        stop = current_reporter().report_epoch(self.epoch, value, max_step=self.epochs)
        self.pruned = stop or self.pruned
        return self.pruned
