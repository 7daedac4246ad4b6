"""How a candidate's quality is estimated.

An estimator that trains (``full``, ``low_fidelity``) works through the app's own config keys:
it adds fixed overrides to every trial (fewer epochs, a fraction of the data, a lower input
resolution), so it works in any Hydra app whose training loop reads those keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class EstimatorError(ValueError):
    """An invalid estimator config: names the key, the value and what is allowed."""


class Estimator:
    name: str = ""

    def run_job(self, cfg: Any, task_function: Callable[[Any], Any]) -> Any:
        """The body of one trial's job (in the job's process): by default the app's own task
        function. An estimator that does not train (a table look-up, a zero-cost proxy)
        replaces it."""
        return task_function(cfg)

    def overrides(self) -> dict[str, Any]:
        """``{config_key: value}`` applied to every trial."""
        return {}

    def config_keys(self) -> list[str]:
        """Keys of the app's config this estimator sets; checked to exist before the sweep."""
        return list(self.overrides())

    def prepare(self, space: Any, job_cfg: Any) -> dict[str, Any]:
        """Check this estimator against the sweep's search space and the app's composed config
        before any trial (raise ``EstimatorError`` naming the key, the value and what is
        allowed); return options to add to the estimator's config, which every trial's job
        rebuilds it from (what a job cannot know alone, such as the whole search space)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Settings logged with every trial as ``estimator.*`` params."""
        return {"name": self.name}

    def log_best_model(self, cfg: Any) -> bool:
        """Log the model of the trial whose config is ``cfg`` to the active MLflow run (that
        trial's run, resumed by the sweeper at the end of the sweep) and return True; False if
        this estimator cannot. Called in the sweeper's process, only for the trial(s) about to
        be registered that logged no model themselves, and only if the app's ``log_model`` is
        true: an estimator whose trials log no model (to stay cheap) logs the winner's here."""
        return False


def reject_unknown(name: str, options: Mapping[str, Any], allowed: list[str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise EstimatorError(f"estimator '{name}': unknown option(s) {unknown}; allowed: {allowed}")
