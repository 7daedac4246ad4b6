"""A search space: an ordered set of parameters over config keys, and its encodings.

An **encoding** is the canonical form of one candidate: a tuple of ``(key, value)`` pairs for the
parameters that are active, in the space's order. It is hashable (so a sweep can tell two equal
candidates apart from different ones), JSON-serialisable (a list of pairs), and independent of
how the candidate was produced: ``encode(decode(e)) == e``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping
from typing import Any

from nas_plugin.space.params import (
    Categorical,
    FloatRange,
    IntRange,
    Param,
    SearchSpaceError,
    Value,
    freeze,
    parse_param,
    thaw,
    values_of,
)

Encoding = tuple[tuple[str, Value], ...]


class SearchSpace:
    """Parameters in dependency order; a conditional parameter follows the one it depends on."""

    def __init__(self, params: list[Param]) -> None:
        if not params:
            raise SearchSpaceError(
                "the search space is empty: give at least one parameter under "
                "hydra.sweeper.params or pick a hydra/sweeper/search_space"
            )
        by_name: dict[str, Param] = {}
        for param in params:
            if param.name in by_name:
                raise SearchSpaceError(f"search space key '{param.name}' is defined twice")
            by_name[param.name] = param
        for param in params:
            self._check_condition(param, by_name)
        self.params: tuple[Param, ...] = tuple(_dependency_order(params, by_name))
        self._by_name = by_name

    @staticmethod
    def _check_condition(param: Param, by_name: Mapping[str, Param]) -> None:
        cond = param.condition
        if cond is None:
            return
        if cond.parent not in by_name:
            raise SearchSpaceError(
                f"search space key '{param.name}': its condition names '{cond.parent}', which is "
                f"not a parameter of this space; allowed: {sorted(by_name)}"
            )
        parent = by_name[cond.parent]
        for value in cond.values:
            if not parent.contains(value):
                raise SearchSpaceError(
                    f"search space key '{param.name}': condition value {thaw(value)!r} can never "
                    f"occur for '{cond.parent}', which is {parent.describe()}"
                )

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> SearchSpace:
        """Parse ``{key: param_spec}`` (the YAML form documented in ``params.parse_param``)."""
        return cls([parse_param(str(key), value) for key, value in spec.items()])

    # -- queries ------------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]

    def __len__(self) -> int:
        return len(self.params)

    def is_active(self, param: Param, decided: Mapping[str, Value]) -> bool:
        return param.condition is None or param.condition.holds(dict(decided))

    def size(self) -> float:
        """How many distinct candidates the space holds (``inf`` with a float interval)."""
        if not self.is_discrete:
            return float("inf")
        parents = {p.condition.parent for p in self.params if p.condition is not None}

        def count(index: int, decided: dict[str, Value]) -> int:
            # Branch only on parameters that others depend on; the rest just multiply.
            if index == len(self.params):
                return 1
            param = self.params[index]
            if not self.is_active(param, decided):
                return count(index + 1, decided)
            if param.name in parents:
                return sum(count(index + 1, {**decided, param.name: v}) for v in param.values())
            return len(param.values()) * count(index + 1, decided)

        return float(count(0, {}))

    @property
    def is_discrete(self) -> bool:
        return all(p.is_discrete for p in self.params)

    # -- encodings ----------------------------------------------------------------------------

    def encode(self, values: Mapping[str, Any]) -> Encoding:
        """The canonical encoding of a candidate given as ``{key: value}``.

        Inactive keys are dropped; a missing or out-of-domain active key is an error.
        """
        decided: dict[str, Value] = {}
        for param in self.params:
            if not self.is_active(param, decided):
                continue
            if param.name not in values:
                raise SearchSpaceError(f"candidate has no value for active key '{param.name}'")
            value = freeze(values[param.name])
            if not param.contains(value):
                raise SearchSpaceError(
                    f"candidate value {thaw(value)!r} for key '{param.name}' is outside the "
                    f"space; allowed: {param.describe()}"
                )
            decided[param.name] = value
        return tuple(decided.items())

    def decode(self, encoding: Encoding) -> dict[str, Any]:
        """``{key: value}`` with JSON/YAML-friendly values (lists, not tuples)."""
        return {key: thaw(value) for key, value in encoding}

    @staticmethod
    def to_json(encoding: Encoding) -> str:
        return json.dumps([[k, thaw(v)] for k, v in encoding])

    @staticmethod
    def from_json(text: str) -> Encoding:
        return tuple((k, freeze(v)) for k, v in json.loads(text))

    # -- generating candidates ----------------------------------------------------------------

    def sample(self, rng: random.Random) -> Encoding:
        decided: dict[str, Value] = {}
        for param in self.params:
            if self.is_active(param, decided):
                decided[param.name] = param.sample(rng)
        return tuple(decided.items())

    def mutate(self, encoding: Encoding, rng: random.Random) -> Encoding:
        """Change one active decision to a different value (regularized evolution's mutation).

        Parameters that the change activates are sampled; ones it deactivates are dropped.
        """
        current = dict(encoding)
        mutable = [
            p
            for p in self.params
            if p.name in current and (not p.is_discrete or len(p.values()) > 1)
        ]
        if not mutable:
            return encoding
        param = rng.choice(mutable)
        if isinstance(param, FloatRange):
            new_value = param.sample(rng)
        else:
            new_value = rng.choice([v for v in param.values() if v != current[param.name]])
        current[param.name] = new_value
        return self._resolve(current, rng)

    def neighbours(self, encoding: Encoding, float_points: int = 5) -> list[Encoding]:
        """Every candidate that differs from ``encoding`` in one active decision.

        Parameters a change activates take their first value, so the list is deterministic.
        """
        current = dict(encoding)
        result: list[Encoding] = []
        for param in self.params:
            if param.name not in current:
                continue
            for value in values_of(param, float_points):
                if value != current[param.name]:
                    result.append(self._resolve({**current, param.name: value}, rng=None))
        return result

    def grid(self, float_points: int = 3) -> Iterator[Encoding]:
        """Every candidate in order (float intervals contribute ``float_points`` values)."""
        yield from self._grid_from(0, {}, float_points)

    def _grid_from(
        self, index: int, decided: dict[str, Value], float_points: int
    ) -> Iterator[Encoding]:
        if index == len(self.params):
            yield tuple(decided.items())
            return
        param = self.params[index]
        if not self.is_active(param, decided):
            yield from self._grid_from(index + 1, decided, float_points)
            return
        for value in values_of(param, float_points):
            yield from self._grid_from(index + 1, {**decided, param.name: value}, float_points)

    def _resolve(self, wanted: Mapping[str, Value], rng: random.Random | None) -> Encoding:
        decided: dict[str, Value] = {}
        for param in self.params:
            if not self.is_active(param, decided):
                continue
            if param.name in wanted:
                decided[param.name] = wanted[param.name]
            elif rng is not None:
                decided[param.name] = param.sample(rng)
            else:
                decided[param.name] = values_of(param, 1)[0]
        return tuple(decided.items())

    def describe(self) -> dict[str, str]:
        """``{key: what it may be}`` for logs and artifacts."""
        out = {}
        for p in self.params:
            cond = ""
            if p.condition is not None:
                cond = f" (only when {p.condition.parent} in {list(thaw(p.condition.values))})"
            out[p.name] = p.describe() + cond
        return out


def _dependency_order(params: list[Param], by_name: Mapping[str, Param]) -> list[Param]:
    """Order so that every parameter follows the one its condition names; reject cycles."""
    ordered: list[Param] = []
    state: dict[str, str] = {}

    def visit(param: Param, chain: list[str]) -> None:
        if state.get(param.name) == "done":
            return
        if state.get(param.name) == "visiting":
            cycle = " -> ".join([*chain, param.name])
            raise SearchSpaceError(f"search space conditions form a cycle: {cycle}")
        state[param.name] = "visiting"
        if param.condition is not None:
            visit(by_name[param.condition.parent], [*chain, param.name])
        state[param.name] = "done"
        ordered.append(param)

    for param in params:
        visit(param, [])
    return ordered


__all__ = [
    "Categorical",
    "Encoding",
    "FloatRange",
    "IntRange",
    "SearchSpace",
    "SearchSpaceError",
]
