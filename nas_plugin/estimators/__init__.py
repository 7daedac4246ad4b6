"""Performance estimators, chosen by ``hydra/sweeper/estimator=<name>``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas_plugin.estimators.base import Estimator, EstimatorError
from nas_plugin.estimators.full import FullTraining
from nas_plugin.estimators.hyperband import Hyperband
from nas_plugin.estimators.low_fidelity import LowFidelity
from nas_plugin.estimators.supernet import SupernetEstimator
from nas_plugin.estimators.tabular import TabularEstimator
from nas_plugin.estimators.zero_cost import ZeroCost

ESTIMATORS = {
    cls.name: cls for cls in (FullTraining, LowFidelity, Hyperband, TabularEstimator, ZeroCost)
}
ESTIMATORS[SupernetEstimator.name] = SupernetEstimator


def make_estimator(config: Mapping[str, Any]) -> Estimator:
    options = dict(config)
    name = options.pop("name", None)
    if name not in ESTIMATORS:
        raise EstimatorError(
            f"hydra.sweeper.estimator.name={name!r} is unknown; allowed: {sorted(ESTIMATORS)}"
        )
    return ESTIMATORS[name].from_config(options)


__all__ = ["ESTIMATORS", "Estimator", "EstimatorError", "make_estimator"]
