"""The Sweeper class Hydra instantiates (it must live under ``hydra_plugins``).

A thin shell: the real sweeper is :class:`nas_plugin.sweeper.NASSweeperImpl`, imported lazily so
that plugin discovery does not pay for torch or mlflow.
"""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.nas_plugin_sweeper import config as _config  # noqa: F401 - registers "nas"


class NASSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        from nas_plugin.sweeper import NASSweeperImpl

        self._impl = NASSweeperImpl(**kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self._impl.sweep(arguments)
