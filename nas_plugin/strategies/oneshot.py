"""``darts``, ``gdas``, ``proxyless``: gradient-based one-shot search as a sweep's strategy.

These methods are not ask/tell searches: one bilevel optimisation over a supernet yields one
architecture. In a sweep they take two jobs (see :mod:`nas_plugin.oneshot.job`):

1. the **search run**: a job that runs the bilevel search on the app's task and reports the
   derived cell (MLflow child run ``search``, tag ``nas.role=search``);
2. the **derived trial**: the sweeper hands the derived cell to this strategy (:meth:`derive`),
   whose only candidate it becomes; it is trained from scratch as a normal trial (trial 0,
   with the sweep's estimator).

Here, as for every strategy, only encodings and numbers: the options are validated before the
sweep starts and passed to the search job as plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.space.nb201 import DEFAULT_PREFIX, EDGE_KEYS, OPS
from nas_plugin.space.params import Categorical
from nas_plugin.strategies.base import Strategy, StrategyError, positive_int


class OneShotStrategy(Strategy):
    """Base of the one-shot strategies: one candidate, the derived cell."""

    #: the sweeper runs a search job first and calls :meth:`derive` with its cell
    needs_search = True

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        prefix: str = DEFAULT_PREFIX,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 0.025,
        weight_decay: float = 3e-4,
        arch_lr: float = 3e-3,
        arch_weight_decay: float = 1e-3,
    ) -> None:
        super().__init__(space, seed)
        self.prefix = prefix
        _check_space(self.name, space, prefix)
        self.settings: dict[str, Any] = {
            "method": self.name,
            "epochs": positive_int(self.name, "epochs", epochs),
            "batch_size": positive_int(self.name, "batch_size", batch_size),
            "lr": _positive(self.name, "lr", lr),
            "weight_decay": _non_negative(self.name, "weight_decay", weight_decay),
            "arch_lr": _positive(self.name, "arch_lr", arch_lr),
            "arch_weight_decay": _non_negative(self.name, "arch_weight_decay", arch_weight_decay),
        }
        self._candidate: Encoding | None = None
        self._asked = False

    def search_settings(self) -> dict[str, Any]:
        """Plain settings of the search job (:class:`nas_plugin.oneshot.search.SearchSettings`)."""
        return dict(self.settings)

    def derive(self, ops: Mapping[str, str]) -> Encoding:
        """Make the search's cell ``{edge_j_i: op}`` this strategy's one candidate."""
        self._candidate = self.space.encode({f"{self.prefix}.{k}": ops[k] for k in EDGE_KEYS})
        return self._candidate

    def ask(self) -> Encoding | None:
        if self._candidate is None:
            raise StrategyError(
                f"strategy '{self.name}' has no candidate: its search job has not run"
            )
        if self._asked:
            return None
        self._asked = True
        return self._candidate


class Darts(OneShotStrategy):
    name = "darts"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        order: int = 1,
        prefix: str = DEFAULT_PREFIX,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 0.025,
        weight_decay: float = 3e-4,
        arch_lr: float = 3e-3,
        arch_weight_decay: float = 1e-3,
    ) -> None:
        super().__init__(
            space, seed, prefix, epochs, batch_size, lr, weight_decay, arch_lr, arch_weight_decay
        )
        if isinstance(order, bool) or order not in (1, 2):
            raise StrategyError(f"strategy 'darts': order={order!r} must be 1 or 2")
        self.settings["order"] = order


class Gdas(OneShotStrategy):
    name = "gdas"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        tau_max: float = 10.0,
        tau_min: float = 0.1,
        latency_weight: float = 0.0,
        latency_beta: float = 0.6,
        latency_table: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 0.025,
        weight_decay: float = 3e-4,
        arch_lr: float = 3e-3,
        arch_weight_decay: float = 1e-3,
    ) -> None:
        super().__init__(
            space, seed, prefix, epochs, batch_size, lr, weight_decay, arch_lr, arch_weight_decay
        )
        tau_max = _positive(self.name, "tau_max", tau_max)
        tau_min = _positive(self.name, "tau_min", tau_min)
        if tau_min > tau_max:
            raise StrategyError(
                f"strategy 'gdas': tau_min={tau_min} must not exceed tau_max={tau_max}"
            )
        self.settings.update(
            tau_max=tau_max,
            tau_min=tau_min,
            latency_weight=_non_negative(self.name, "latency_weight", latency_weight),
            latency_beta=_non_negative(self.name, "latency_beta", latency_beta),
            latency_table=_table(self.name, latency_table),
        )


class Proxyless(OneShotStrategy):
    name = "proxyless"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        latency_weight: float = 0.0,
        latency_table: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 0.025,
        weight_decay: float = 3e-4,
        arch_lr: float = 3e-3,
        arch_weight_decay: float = 1e-3,
    ) -> None:
        super().__init__(
            space, seed, prefix, epochs, batch_size, lr, weight_decay, arch_lr, arch_weight_decay
        )
        self.settings["latency_weight"] = _non_negative(self.name, "latency_weight", latency_weight)
        self.settings["latency_table"] = _table(self.name, latency_table)


def _check_space(name: str, space: SearchSpace, prefix: str) -> None:
    wanted = [f"{prefix}.{key}" for key in EDGE_KEYS]
    if sorted(space.names) != sorted(wanted) or not all(
        isinstance(space[n], Categorical) and set(space[n].choices) == set(OPS) for n in wanted
    ):
        raise StrategyError(
            f"strategy '{name}' searches the NB201 cell through a supernet: it needs "
            f"hydra/sweeper/search_space=nb201 (keys {wanted[0]} ... {wanted[-1]}, operations "
            f"from {list(OPS)}) and nothing else; the search space has {list(space.names)}"
        )


def _positive(strategy: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise StrategyError(f"strategy '{strategy}': {key}={value!r} must be a number > 0")
    return float(value)


def _non_negative(strategy: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise StrategyError(f"strategy '{strategy}': {key}={value!r} must be a number >= 0")
    return float(value)


def _table(strategy: str, path: Any) -> str | None:
    """A saved latency table: checked to exist before the sweep (read by the search job)."""
    if path is None:
        return None
    if not isinstance(path, str) or not Path(path).is_file():
        raise StrategyError(
            f"strategy '{strategy}': latency_table={path!r} must be null (measure the table on "
            "this machine) or the path of a saved search/latency_lut.json"
        )
    return str(Path(path).resolve())
