"""The settings of nnexp's search (``hydra.sweeper.*`` with ``search=...``), typed and closed: a key
that is not here, or a value of the wrong type, is refused when Hydra composes the command, in one
line that names it. Registered in Hydra's ConfigStore as ``hydra/sweeper=nnexp_optuna``, as Hydra's
own Optuna sweeper registers its settings; the keys are that sweeper's.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore


class Direction(Enum):
    maximize = 1  # the objective is the best validation accuracy
    minimize = 2


@dataclass
class SearchConf:
    """An Optuna study run as a sweep: ``n_trials`` trials, ``n_jobs`` at a time through the launcher."""

    _target_: str = "hydra_plugins.nnexp_search.SearchSweeper"
    _recursive_: bool = False  # the search builds the sampler and the pruner itself (every job the same)
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"pruner": "median"}])
    n_trials: int = 20  # the study's total: running the command again continues the study up to it
    n_jobs: int = 1  # trials launched at a time (through hydra/launcher: joblib runs them side by side)
    direction: Direction = Direction.maximize
    study_name: str | None = None  # None: the search preset's name and the command's fixed overrides
    storage: str | None = None  # None: optuna.journal beside the MLflow store; or a database URL
    # An Optuna sampler: its _target_ and its arguments (seeded by the run's seed unless told otherwise).
    sampler: Any = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": "${seed}"}
    )
    pruner: Any = None  # an Optuna pruner, from hydra/sweeper/pruner: median, hyperband or none
    params: dict[str, str] | None = (
        None  # parameter: sweep grammar, e.g. train.eta: tag(log, interval(0.01, 10))
    )


ConfigStore.instance().store(group="hydra/sweeper", name="nnexp_optuna", node=SearchConf, provider="nnexp")
