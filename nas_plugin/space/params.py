"""The decisions a search space is made of.

Each parameter is one decision over one config key:

- ``Categorical``: one of a list of choices (numbers, strings, booleans, lists).
- ``IntRange``: integers from ``low`` to ``high``, **both bounds included**, in steps of ``step``
  (Hydra's own ``range(a, b)`` excludes ``b``; ours does not, so ``{low: 1, high: 4}`` is 1..4).
- ``FloatRange``: a float interval ``[low, high]``, sampled uniformly or log-uniformly.

A parameter with a ``condition`` exists only while another parameter has one of the given values
(e.g. ``model.resnet.depth`` only when ``model.family`` is ``resnet``).

Pure Python on purpose: strategies use these without torch, Hydra or MLflow.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# A value one decision can take. Lists from YAML become tuples so encodings stay hashable.
Value = Any


class SearchSpaceError(ValueError):
    """An invalid search space: the message names the key, the value and what is allowed."""


def freeze(value: Any) -> Value:
    """Make a config value hashable (lists -> tuples, dicts -> sorted item tuples)."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    return value


def thaw(value: Value) -> Any:
    """The JSON/YAML-friendly form of a frozen value (tuples -> lists)."""
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Condition:
    """Active only while the parameter ``parent`` takes one of ``values``."""

    parent: str
    values: tuple[Value, ...]

    def holds(self, decided: dict[str, Value]) -> bool:
        return self.parent in decided and decided[self.parent] in self.values


@dataclass(frozen=True)
class Categorical:
    name: str
    choices: tuple[Value, ...]
    condition: Condition | None = None

    @property
    def is_discrete(self) -> bool:
        return True

    def values(self) -> tuple[Value, ...]:
        return self.choices

    def sample(self, rng: random.Random) -> Value:
        return rng.choice(self.choices)

    def contains(self, value: Value) -> bool:
        return value in self.choices

    def describe(self) -> str:
        return f"one of {list(thaw(self.choices))}"


@dataclass(frozen=True)
class IntRange:
    name: str
    low: int
    high: int  # included
    step: int = 1
    condition: Condition | None = None

    @property
    def is_discrete(self) -> bool:
        return True

    def values(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1, self.step))

    def sample(self, rng: random.Random) -> int:
        return rng.choice(self.values())

    def contains(self, value: Value) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def describe(self) -> str:
        step = f" in steps of {self.step}" if self.step != 1 else ""
        return f"an integer from {self.low} to {self.high} (both included){step}"


@dataclass(frozen=True)
class FloatRange:
    name: str
    low: float
    high: float
    log: bool = False
    condition: Condition | None = None

    @property
    def is_discrete(self) -> bool:
        return False

    def values(self) -> tuple[float, ...]:
        raise TypeError(f"'{self.name}' is a continuous interval: it has no finite list of values")

    def grid(self, points: int) -> tuple[float, ...]:
        """``points`` evenly spaced values (in log space when ``log``), both ends included."""
        if points == 1:
            return (self.low,)
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            inner = [math.exp(lo + (hi - lo) * i / (points - 1)) for i in range(1, points - 1)]
        else:
            span = self.high - self.low
            inner = [self.low + span * i / (points - 1) for i in range(1, points - 1)]
        # The ends are the bounds exactly, not exp(log(bound)) with its rounding error.
        return (self.low, *inner, self.high)

    def sample(self, rng: random.Random) -> float:
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def contains(self, value: Value) -> bool:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
        )

    def describe(self) -> str:
        scale = "log-uniform" if self.log else "uniform"
        return f"a float in [{self.low}, {self.high}] ({scale})"


Param = Categorical | IntRange | FloatRange


def _number(key: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SearchSpaceError(f"search space key '{key}': {field}={value!r} is not a number")
    return value


def parse_param(key: str, spec: Any) -> Param:
    """Build one parameter from its YAML form.

    Forms: a list (categorical shorthand); ``{choices: [...]}``; ``{low, high[, step]}`` with
    integer bounds (an integer range, high included); ``{low, high, log: bool}`` with a float bound
    or ``type: float`` (a float interval). Any of them may add ``when: {other_key: value(s)}``.
    """
    if isinstance(spec, list | tuple):
        spec = {"choices": list(spec)}
    if not isinstance(spec, dict):
        raise SearchSpaceError(
            f"search space key '{key}': {spec!r} is not a parameter; allowed: a list of choices, "
            "{choices: [...]}, or {low: .., high: .., [step: ..], [log: true]}"
        )
    spec = dict(spec)
    condition = _parse_condition(key, spec.pop("when", None))
    kind = spec.pop("type", None)
    allowed_kinds = ("categorical", "int", "float")
    if kind is not None and kind not in allowed_kinds:
        raise SearchSpaceError(
            f"search space key '{key}': type={kind!r} is unknown; allowed: {list(allowed_kinds)}"
        )
    if kind == "categorical" or (kind is None and "choices" in spec):
        return _parse_categorical(key, spec, condition)
    if "low" not in spec or "high" not in spec:
        raise SearchSpaceError(
            f"search space key '{key}': {spec!r} needs either 'choices' or both 'low' and 'high'"
        )
    low = _number(key, "low", spec.pop("low"))
    high = _number(key, "high", spec.pop("high"))
    log = spec.pop("log", False)
    step = spec.pop("step", None)
    if spec:
        raise SearchSpaceError(
            f"search space key '{key}': unknown field(s) {sorted(spec)}; allowed: "
            "low, high, step, log, type, when"
        )
    if not isinstance(log, bool):
        raise SearchSpaceError(f"search space key '{key}': log={log!r} must be true or false")
    if low > high:
        raise SearchSpaceError(
            f"search space key '{key}': low={low} > high={high}; low must be <= high"
        )
    if log and low <= 0:
        raise SearchSpaceError(f"search space key '{key}': log scale needs low > 0, got low={low}")
    is_int = kind == "int" or (kind is None and isinstance(low, int) and isinstance(high, int))
    if is_int:
        if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
            raise SearchSpaceError(
                f"search space key '{key}': type=int needs integer bounds, got low={low}, "
                f"high={high}"
            )
        if log:
            raise SearchSpaceError(
                f"search space key '{key}': log=true is for float intervals; for integers list "
                "the choices or add type: float"
            )
        step = 1 if step is None else step
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise SearchSpaceError(
                f"search space key '{key}': step={step!r} must be a positive integer"
            )
        return IntRange(key, int(low), int(high), int(step), condition)
    if step is not None:
        raise SearchSpaceError(
            f"search space key '{key}': step={step!r} is only for integer ranges; float "
            "intervals are continuous"
        )
    return FloatRange(key, float(low), float(high), log, condition)


def _parse_categorical(key: str, spec: dict, condition: Condition | None) -> Categorical:
    choices = spec.pop("choices", None)
    if spec:
        raise SearchSpaceError(
            f"search space key '{key}': unknown field(s) {sorted(spec)} beside 'choices'; "
            "allowed: choices, type, when"
        )
    if not isinstance(choices, list | tuple) or len(choices) == 0:
        raise SearchSpaceError(
            f"search space key '{key}': choices={choices!r}; need a non-empty list of choices"
        )
    frozen = tuple(freeze(c) for c in choices)
    if len(set(frozen)) != len(frozen):
        raise SearchSpaceError(
            f"search space key '{key}': choices={list(choices)!r} repeat a value; each choice "
            "must appear once"
        )
    return Categorical(key, frozen, condition)


def _parse_condition(key: str, when: Any) -> Condition | None:
    if when is None:
        return None
    if not isinstance(when, dict) or len(when) != 1:
        raise SearchSpaceError(
            f"search space key '{key}': when={when!r}; need exactly one "
            "'{other_key: value}' or '{other_key: [values]}'"
        )
    ((parent, values),) = when.items()
    values = values if isinstance(values, list | tuple) else [values]
    if not values:
        raise SearchSpaceError(f"search space key '{key}': when={when!r} lists no values")
    return Condition(str(parent), tuple(freeze(v) for v in values))


def values_of(param: Param, float_points: int) -> Sequence[Value]:
    """All values of a discrete parameter, or ``float_points`` grid values of an interval."""
    if isinstance(param, FloatRange):
        return param.grid(float_points)
    return param.values()
