"""nnexp's Optuna sweeper, where Hydra looks for plugins (it loads them only from ``hydra_plugins``).

A thin door, as Hydra's own plugins are: Hydra imports every plugin module whenever it starts, so the
search itself (``nnexp.search``, which needs Optuna) is imported only when a search runs. Its settings
are ``config.SearchConf``.
"""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SearchSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        """``settings`` are ``hydra.sweeper``'s keys, checked against ``SearchConf`` when Hydra composed
        them; the search reads them from the config in ``setup``, where its jobs read them too."""
        from nnexp.search import Search  # Optuna: only when a search runs

        self.search = Search()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
