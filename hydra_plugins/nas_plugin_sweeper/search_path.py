"""Adds our sweeper config groups (strategy, search_space, estimator) to every Hydra app."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from nas_plugin import config_dir


class NASSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="nas_plugin", path=f"file://{config_dir() / 'plugin'}")
