"""Learning-curve extrapolation (in the spirit of Domhan et al., 2015): fit a saturating power
law to the trial's own curve, predict its value at the step budget, and stop the trial if even
that prediction plus a margin cannot beat the best value any other trial has reported.

The model is ``y(t) = a - b * t**(-c)`` (b, c >= 0: rising, flattening towards ``a``), fitted
with ``scipy.optimize.curve_fit``; when it cannot be fitted (too few distinct points, no
convergence) a straight line in ``log t`` is used instead, which never saturates and so errs on
the side of letting the trial run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from nas_plugin.pruning.base import (
    CONTINUE,
    Curve,
    Decision,
    PrunerError,
    PruningRule,
    check_int,
    check_number,
    check_optional_int,
)


def power_law(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(t, -c)


def extrapolate(curve: Curve, horizon: int) -> tuple[float, str]:
    """The curve's predicted value at step ``horizon`` and the model that predicted it."""
    steps = np.array([s for s, _ in curve], dtype=float)
    values = np.array([v for _, v in curve], dtype=float)
    # Steps counted from 1, so that t**-c is finite when a loop reports step 0.
    shift = 1.0 if steps.min() < 1 else 0.0
    t, target = steps + shift, float(horizon) + shift
    if len(np.unique(t)) >= 3:
        from scipy.optimize import curve_fit

        spread = float(values.max() - values.min()) or 1.0
        start = (float(values.max()) + 0.1 * spread, spread, 0.5)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # OptimizeWarning on a poor covariance
                (a, b, c), _ = curve_fit(
                    power_law,
                    t,
                    values,
                    p0=start,
                    bounds=([-np.inf, 0.0, 0.0], [np.inf, np.inf, 5.0]),
                    maxfev=2000,
                )
            predicted = float(power_law(np.array([target]), a, b, c)[0])
            if math.isfinite(predicted):
                return predicted, "power law"
        except (RuntimeError, ValueError):
            pass
    if len(np.unique(t)) < 2:
        return float(values[-1]), "last value"
    slope, intercept = np.polyfit(np.log(t), values, 1)
    return float(intercept + slope * math.log(target)), "log-linear"


class CurveRule(PruningRule):
    name = "curve"

    def __init__(
        self, min_points: int = 3, margin: float = 0.0, max_step: int | None = None
    ) -> None:
        # Reports the trial must have made before its curve is extrapolated.
        self.min_points = check_int(self.name, "min_points", min_points, 2)
        # In the metric's units: stop only if prediction + margin < the best so far.
        self.margin = check_number(self.name, "margin", margin, 0.0)
        # The step budget the curve is extrapolated to; null: the budget the trial's loop
        # reports (report(..., max_step=); our pipelines and callbacks pass it).
        self.max_step = check_optional_int(self.name, "max_step", max_step, 1)

    def decide(self, own: Curve, others: Sequence[Curve], max_step: int | None) -> Decision:
        step, _ = own[-1]
        if len(own) < self.min_points:
            return CONTINUE
        horizon = self.max_step or max_step
        if horizon is None:
            raise PrunerError(
                "pruner 'curve' needs the step budget to extrapolate to: set "
                "hydra.sweeper.pruner.max_step, or pass max_step to nas_plugin.report()"
            )
        if step >= horizon:
            return CONTINUE
        reached = [v for curve in others for _, v in curve]
        if not reached:
            return CONTINUE
        best = max(reached)
        predicted, model = extrapolate(own, horizon)
        if predicted + self.margin < best:
            return Decision(
                True,
                f"curve: predicted {predicted:.4g} at step {horizon} ({model} fit of "
                f"{len(own)} points) + margin {self.margin:g} < best so far {best:.4g}",
            )
        return CONTINUE
