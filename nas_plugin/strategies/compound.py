"""EfficientNet's compound scaling search (Tan & Le, 2019), in two phases.

1. **Grid**: at ``phi = 1``, every ``(alpha, beta, gamma)`` of the space's grid with
   ``alpha * beta**2 * gamma**2`` within ``tolerance`` (relative) of ``target`` (2: each step of
   phi about doubles the FLOPs) is a candidate, in grid order.
2. **Scale**: from the best of them, ``phi = 2, 3, ...`` (the space's ``phi`` values above 1, in
   order) with the found ``alpha, beta, gamma``; ``phi = 1`` was trained in phase 1.

The space must be exactly the four keys (``search_space=compound``); a grid with no point
within the tolerance is an error before any trial. With parallel trials, phase 2 starts from
the best phase-1 result told by the time phase 1's queue is used up. The scaling curve is logged
to the sweep's parent run at the end (:mod:`nas_plugin.tracking.scaling`).
"""

from __future__ import annotations

import itertools

from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.space.params import values_of
from nas_plugin.strategies.base import Strategy, StrategyError, positive_int

PREFIX = "model.compound"


class CompoundScaling(Strategy):
    name = "compound"
    # Called by the sweeper after the last trial, outside the strategy (which never sees MLflow).
    end_of_sweep_report = "nas_plugin.tracking.scaling:log_scaling_curve"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        target: float = 2.0,
        tolerance: float = 0.1,
        prefix: str = PREFIX,
        float_points: int = 5,
    ) -> None:
        super().__init__(space, seed)
        if isinstance(target, bool) or not isinstance(target, int | float) or target <= 0:
            raise StrategyError(f"strategy 'compound': target={target!r} must be a number > 0")
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
            raise StrategyError(f"strategy 'compound': tolerance={tolerance!r} must be a number")
        if not 0 <= tolerance < 1:
            raise StrategyError(
                f"strategy 'compound': tolerance={tolerance!r} must be in [0, 1) (relative)"
            )
        self.target, self.tolerance = float(target), float(tolerance)
        self.float_points = positive_int(self.name, "float_points", float_points)
        self.keys = {c: f"{prefix}.{c}" for c in ("alpha", "beta", "gamma", "phi")}
        missing = [k for k in self.keys.values() if k not in space.names]
        extra = sorted(set(space.names) - set(self.keys.values()))
        if missing or extra:
            raise StrategyError(
                f"strategy 'compound' searches exactly {list(self.keys.values())} "
                f"(search_space=compound); missing {missing}, not searchable here {extra}"
            )
        grids = {c: values_of(space[k], self.float_points) for c, k in self.keys.items()}
        self.phis = sorted(float(p) for p in grids["phi"])
        if 1 not in self.phis:
            raise StrategyError(
                f"strategy 'compound': {self.keys['phi']} must include 1 (the grid phase runs at "
                f"phi = 1); its values are {self.phis}"
            )
        self.grid = [
            abc
            for abc in itertools.product(grids["alpha"], grids["beta"], grids["gamma"])
            if abs(self.flops_factor(*abc) - self.target) <= self.tolerance * self.target
        ]
        if not self.grid:
            raise StrategyError(
                f"strategy 'compound': no (alpha, beta, gamma) of the grid {list(grids['alpha'])}"
                f" x {list(grids['beta'])} x {list(grids['gamma'])} has alpha * beta^2 * gamma^2"
                f" within {self.tolerance:.0%} of {self.target:g}; widen the grid or the tolerance"
            )
        self._phi_value = {float(p): p for p in grids["phi"]}  # as the space spells it (1 or 1.0)
        self._queue = [self.encode(*abc, 1.0) for abc in self.grid]
        self._scaled: list[Encoding] | None = None  # phase 2, once formed
        self.found: tuple[float, float, float] | None = None

    def flops_factor(self, alpha: float, beta: float, gamma: float) -> float:
        """FLOPs grow by ``alpha * beta^2 * gamma^2`` per step of phi."""
        return alpha * beta**2 * gamma**2

    def encode(self, alpha: float, beta: float, gamma: float, phi: float) -> Encoding:
        values = dict(zip(("alpha", "beta", "gamma"), (alpha, beta, gamma), strict=True))
        values["phi"] = self._phi_value[phi]
        return self.space.encode({self.keys[c]: v for c, v in values.items()})

    def ask(self) -> Encoding | None:
        if self._queue:
            return self._queue.pop(0)
        if self._scaled is None:
            told = [
                (e, s) for e, s in self.history if s is not None and dict(e)[self.keys["phi"]] == 1
            ]
            if not told:
                return None  # every grid point failed (or none finished yet): nothing to scale
            best = max(told, key=lambda pair: pair[1])[0]
            values = dict(best)
            self.found = tuple(float(values[self.keys[c]]) for c in ("alpha", "beta", "gamma"))
            self._scaled = [self.encode(*self.found, phi) for phi in self.phis if phi > 1]
        return self._scaled.pop(0) if self._scaled else None
