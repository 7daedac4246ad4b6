"""What every pruning rule sees and answers: numbers only (no MLflow, no torch, no Hydra).

A rule is asked once per reported value. It gets the trial's own curve (its last point is the
value just reported), the curves of the sweep's other trials, and the step budget if known, all
as ``(step, value)`` pairs oriented so that higher is better (a minimised metric is negated by
the caller). It answers with a :class:`Decision`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

# (step, value) pairs in increasing step order; higher values are better.
Curve = Sequence[tuple[int, float]]


class PrunerError(ValueError):
    """An invalid pruner config: the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Decision:
    stop: bool
    reason: str = ""


CONTINUE = Decision(False)


class PruningRule(ABC):
    """Base class of the rules selected by ``hydra/sweeper/pruner=<name>``."""

    name: ClassVar[str] = ""

    @abstractmethod
    def decide(self, own: Curve, others: Sequence[Curve], max_step: int | None) -> Decision:
        """Whether the trial whose newest point is ``own[-1]`` should stop now."""

    def describe(self) -> dict[str, Any]:
        """The rule's settings, logged as ``pruner.*`` params of the sweep's parent run."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {"name": self.name, **{n: getattr(self, n) for n in names}}

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> PruningRule:
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise PrunerError(
                f"hydra.sweeper.pruner: unknown option(s) {unknown} for pruner '{cls.name}'; "
                f"allowed: {allowed}"
            )
        return cls(**options)


def value_at(curve: Curve, step: int) -> float | None:
    """The curve's value reported at exactly ``step`` (the last one if reported twice)."""
    found = None
    for s, v in curve:
        if s == step:
            found = v
    return found


def first_at_or_after(curve: Curve, step: int) -> float | None:
    """The value of the first report at or after ``step``: where the curve crossed it."""
    for s, v in curve:
        if s >= step:
            return v
    return None


def check_int(rule: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PrunerError(
            f"hydra.sweeper.pruner.{key}={value!r} (pruner '{rule}') must be an integer "
            f">= {minimum}"
        )
    return value


def check_optional_int(rule: str, key: str, value: Any, minimum: int) -> int | None:
    return None if value is None else check_int(rule, key, value, minimum)


def check_number(rule: str, key: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
        raise PrunerError(
            f"hydra.sweeper.pruner.{key}={value!r} (pruner '{rule}') must be a number "
            f">= {minimum:g}"
        )
    return float(value)
