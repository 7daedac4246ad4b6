"""What a sweep optimises: one metric, several (a Pareto front), or a MnasNet-style reward.

The strategy always sees "higher is better" scores: one float, or a tuple with one float per
objective. Minimised metrics are negated here, and nowhere else.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DIRECTIONS = ("maximize", "minimize")


class ObjectiveError(ValueError):
    """An invalid objective config: names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Reward:
    """MnasNet's reward ``metric * (cost / target) ** weight`` (Tan et al., 2019).

    With ``weight < 0`` a candidate slower than ``target`` is penalised and a faster one
    rewarded, softly: one number that trades accuracy against latency (or FLOPs, params...).
    """

    cost: str
    target: float
    weight: float = -0.07

    def __call__(self, value: float, cost: float) -> float:
        return value * (max(cost, 1e-12) / self.target) ** self.weight


@dataclass(frozen=True)
class Objective:
    metrics: tuple[str, ...]  # empty: the task function returns one number
    directions: tuple[str, ...]
    reward: Reward | None = None

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    @property
    def primary(self) -> str:
        """The metric the leaderboard shows first (``objective`` for a plain number)."""
        return self.metrics[0] if self.metrics else "objective"

    @property
    def required(self) -> tuple[str, ...]:
        """Metrics every successful trial must report as finite numbers."""
        extra = (self.reward.cost,) if self.reward and self.reward.cost not in self.metrics else ()
        return (*self.metrics, *extra)

    def score(self, metrics: Mapping[str, float]) -> float | tuple[float, ...]:
        """The strategy's view of a trial's metrics: higher is better."""
        if self.multi:
            return tuple(
                _signed(metrics[m], d) for m, d in zip(self.metrics, self.directions, strict=True)
            )
        value = metrics[self.primary]
        if self.reward is not None:
            return self.reward(value, metrics[self.reward.cost])
        return _signed(value, self.directions[0])

    def describe(self) -> dict[str, str]:
        out = {
            "objective.metric": ",".join(self.metrics) or "objective",
            "objective.direction": ",".join(self.directions),
        }
        if self.reward is not None:
            out["objective.reward"] = (
                f"{self.primary} * ({self.reward.cost} / {self.reward.target}) ** "
                f"{self.reward.weight}"
            )
        return out


def _signed(value: float, direction: str) -> float:
    return value if direction == "maximize" else -value


def parse_objective(config: Mapping[str, Any]) -> Objective:
    """Parse ``hydra.sweeper.objective``.

    ``{metric: name | [names] | null, direction: dir | [dirs], reward: {cost, target, weight}}``
    """
    metric = config.get("metric")
    direction = config.get("direction", "maximize")
    metrics = [] if metric is None else [metric] if isinstance(metric, str) else list(metric)
    if any(not isinstance(m, str) or not m for m in metrics) or (
        metric is not None and not metrics
    ):
        raise ObjectiveError(
            f"hydra.sweeper.objective.metric={metric!r} must be a metric name, a list of names "
            "(multi-objective) or null"
        )
    directions = [direction] if isinstance(direction, str) else list(direction)
    for d in directions:
        if d not in DIRECTIONS:
            raise ObjectiveError(
                f"hydra.sweeper.objective.direction={direction!r}; allowed: {list(DIRECTIONS)} "
                "(or a list of them, one per metric)"
            )
    if len(metrics) > 1 and isinstance(direction, str):
        directions = directions * len(metrics)  # one direction for every metric
    if len(metrics) > 1 and len(directions) != len(metrics):
        raise ObjectiveError(
            f"hydra.sweeper.objective.direction={direction!r} has {len(directions)} entries for "
            f"{len(metrics)} metrics {metrics}; give one direction or one per metric"
        )
    if len(metrics) <= 1 and len(directions) != 1:
        raise ObjectiveError(
            f"hydra.sweeper.objective.direction={direction!r}: one metric takes one direction"
        )
    reward = _parse_reward(config.get("reward"), metrics, directions)
    return Objective(tuple(metrics), tuple(directions), reward)


def _parse_reward(spec: Any, metrics: list[str], directions: list[str]) -> Reward | None:
    if spec is None:
        return None
    where = "hydra.sweeper.objective.reward"
    if not isinstance(spec, Mapping):
        raise ObjectiveError(f"{where}={spec!r} must be {{cost: METRIC, target: NUMBER, weight}}")
    unknown = sorted(set(spec) - {"cost", "target", "weight"})
    if unknown:
        raise ObjectiveError(f"{where}: unknown field(s) {unknown}; allowed: cost, target, weight")
    if len(metrics) != 1 or directions != ["maximize"]:
        raise ObjectiveError(
            f"{where} needs exactly one metric to maximise (e.g. val_accuracy), got "
            f"metric={metrics} direction={directions}"
        )
    cost, target, weight = spec.get("cost"), spec.get("target"), spec.get("weight", -0.07)
    if not isinstance(cost, str) or not cost:
        raise ObjectiveError(f"{where}.cost={cost!r} must name a cost metric (e.g. latency_ms)")
    if isinstance(target, bool) or not isinstance(target, int | float) or target <= 0:
        raise ObjectiveError(f"{where}.target={target!r} must be a number > 0")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise ObjectiveError(f"{where}.weight={weight!r} must be a number (MnasNet uses -0.07)")
    return Reward(cost, float(target), float(weight))


_COMPARISONS = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.\-/]*)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``metric <op> number``, e.g. ``latency_ms <= 5``: which trials may be registered."""

    metric: str
    op: str
    bound: float

    def holds(self, metrics: Mapping[str, float]) -> bool:
        value = metrics.get(self.metric)
        return value is not None and _COMPARISONS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraint(text: str | None) -> Constraint | None:
    if text is None:
        return None
    match = _CONSTRAINT.match(str(text))
    if not match:
        raise ObjectiveError(
            f"hydra.sweeper.registry.constraint={text!r} must look like 'METRIC OP NUMBER' with "
            f"OP in {list(_COMPARISONS)}, e.g. 'latency_ms <= 5'"
        )
    try:
        bound = float(match.group(3))
    except ValueError:
        raise ObjectiveError(
            f"hydra.sweeper.registry.constraint={text!r}: {match.group(3)!r} is not a number"
        ) from None
    return Constraint(match.group(1), match.group(2), bound)
