"""``zero_cost``: score a candidate by zero-cost proxies of its untrained network.

A trial builds the model and one or a few minibatches through a **factory** (``"module:
function"``, see :mod:`nas_plugin.proxies.factory`) and returns the proxies' scores in place of
trained metrics; the app's training loop never runs. ``hydra.sweeper.objective.metric`` picks
the proxy to search by (all are "higher is better"). A trial takes about a second on a CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nas_plugin.estimators.base import Estimator, EstimatorError, reject_unknown


class ZeroCost(Estimator):
    name = "zero_cost"

    def __init__(
        self,
        proxies: Sequence[str] = ("synflow", "naswot"),
        batch_size: int = 64,
        batches: int = 1,
        seed: int = 0,
        factory: str | None = None,
    ) -> None:
        # Imported here: every estimator module is imported to validate any sweep config.
        from nas_plugin.proxies import PROXIES, ProxyError, check_proxies
        from nas_plugin.proxies.factory import DEFAULT_FACTORY, load_factory

        if isinstance(proxies, str) or not isinstance(proxies, Sequence):
            raise EstimatorError(
                f"hydra.sweeper.estimator.proxies={proxies!r} must be a list of proxy names; "
                f"allowed: {list(PROXIES)}"
            )
        try:
            self.proxies = check_proxies(list(proxies))
        except ProxyError as err:
            raise EstimatorError(
                f"hydra.sweeper.estimator.proxies={list(proxies)!r}: {err}"
            ) from err
        self.batch_size = _positive_int("batch_size", batch_size)
        self.batches = _positive_int("batches", batches)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise EstimatorError(f"hydra.sweeper.estimator.seed={seed!r} must be an integer")
        self.seed = seed
        self.factory = DEFAULT_FACTORY if factory is None else factory
        try:
            # Loaded now so that a typo fails the sweep before its first trial.
            self._factory: Callable[..., Any] = load_factory(self.factory)
        except ProxyError as err:
            raise EstimatorError(f"hydra.sweeper.estimator.factory: {err}") from err

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> ZeroCost:
        reject_unknown(cls.name, options, ["proxies", "batch_size", "batches", "seed", "factory"])
        return cls(**options)

    def run_job(self, cfg: Any, task_function: Callable[[Any], Any]) -> dict[str, float]:
        """Score the trial's untrained model; ``task_function`` (training) is never called.

        Returns every proxy's score, ``params`` and ``proxy_seconds`` (the scoring alone,
        without building the model and batches).
        """
        from nas_plugin.proxies import score
        from nas_plugin.proxies.factory import config_device

        model, inputs, targets = self._factory(cfg, self.batch_size, self.batches, self.seed)
        start = time.perf_counter()
        # On the trial's train.device (a GPU when there is one), in float32.
        scores = score(model, inputs, targets, self.proxies, self.seed, config_device(cfg))
        seconds = time.perf_counter() - start
        params = float(sum(p.numel() for p in model.parameters()))
        return {**scores, "params": params, "proxy_seconds": seconds}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "proxies": ",".join(self.proxies),
            "batch_size": self.batch_size,
            "batches": self.batches,
            "seed": self.seed,
            "factory": self.factory,
        }


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EstimatorError(f"hydra.sweeper.estimator.{key}={value!r} must be a positive integer")
    return value
