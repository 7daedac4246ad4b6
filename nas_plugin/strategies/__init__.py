"""Search strategies behind one ask/tell interface; ``make_strategy`` builds one from config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas_plugin.space import SearchSpace
from nas_plugin.strategies.base import Strategy, StrategyError, check_options
from nas_plugin.strategies.bo import BayesianOptimization
from nas_plugin.strategies.compound import CompoundScaling
from nas_plugin.strategies.evolution import RegularizedEvolution
from nas_plugin.strategies.grid import GridSearch
from nas_plugin.strategies.local_search import LocalSearch
from nas_plugin.strategies.nsga2 import NSGA2
from nas_plugin.strategies.oneshot import Darts, Enas, Gdas, Proxyless
from nas_plugin.strategies.parego import ParEGO
from nas_plugin.strategies.pnas import PNAS
from nas_plugin.strategies.random_search import RandomSearch
from nas_plugin.strategies.reinforce import Reinforce

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (RandomSearch, GridSearch, RegularizedEvolution)
}
STRATEGIES[LocalSearch.name] = LocalSearch
STRATEGIES[BayesianOptimization.name] = BayesianOptimization
STRATEGIES[Reinforce.name] = Reinforce
STRATEGIES[NSGA2.name] = NSGA2
STRATEGIES[PNAS.name] = PNAS
STRATEGIES[CompoundScaling.name] = CompoundScaling
STRATEGIES[ParEGO.name] = ParEGO
# One-shot: a search job yields the one candidate (nas_plugin/oneshot/job.py).
STRATEGIES.update({cls.name: cls for cls in (Darts, Gdas, Proxyless, Enas)})


def make_strategy(config: Mapping[str, Any], space: SearchSpace, seed: int) -> Strategy:
    """Build the strategy named by ``config['name']`` with the rest of ``config`` as options."""
    options = dict(config)
    name = options.pop("name", None)
    if name not in STRATEGIES:
        raise StrategyError(
            f"hydra.sweeper.strategy.name={name!r} is unknown; allowed: {sorted(STRATEGIES)}"
        )
    cls = STRATEGIES[name]
    check_options(cls, options)
    return cls(space, seed=seed, **options)


__all__ = [
    "STRATEGIES",
    "BayesianOptimization",
    "CompoundScaling",
    "GridSearch",
    "LocalSearch",
    "NSGA2",
    "PNAS",
    "ParEGO",
    "RandomSearch",
    "RegularizedEvolution",
    "Reinforce",
    "Strategy",
    "StrategyError",
    "make_strategy",
]
