"""nnexp's Optuna sweeper, where Hydra looks for plugins (it loads them only from ``hydra_plugins``).

The sweeper is ``nnexp.search.Search``; this door imports it only when a search runs, because Hydra
imports every plugin module whenever it starts.
"""

from typing import Any

from hydra.plugins.sweeper import Sweeper


class SearchSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        """``settings`` are ``hydra.sweeper``'s keys; the search reads them from the config in ``setup``,
        where its jobs read them too."""
        from nnexp.search import Search

        self.search = Search()

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
