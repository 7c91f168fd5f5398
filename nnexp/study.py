"""Where a search keeps its Optuna study, said without Optuna: a sweep's callback and every job need to
know whether they are part of a search, and where its study is, long before (or without) importing
Optuna, which only the search's driver and a trial's reporter load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from nnexp import store
from nnexp.errors import ConfigError
from nnexp.grammar import RESUME, Overrides

SWEEPER = "hydra_plugins.nnexp_search.SearchSweeper"  # hydra/sweeper=nnexp_optuna
JOURNAL = "optuna.journal"  # the default storage, beside the MLflow store


@dataclass(frozen=True)
class StudyPlace:
    """A study's name and storage: what the driver and every job need to reach the same study."""

    name: str
    storage: str  # a database URL (sqlite:///, postgresql://...) or the path of a journal file

    def open(self) -> Any:
        """The study's storage: an RDB for a URL, Optuna's JournalStorage for a file (safe for parallel
        workers and on network file systems, where Optuna advises against sqlite)."""
        import optuna  # only a search and its trials open the study

        if "://" in self.storage:
            return optuna.storages.RDBStorage(self.storage)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(self.storage))


def is_search(config: DictConfig) -> bool:
    return config.hydra.sweeper.get("_target_") == SWEEPER


def study_of(config: DictConfig) -> StudyPlace | None:
    """Where the search of ``config`` keeps its study; None when the sweep is not a search.

    Without ``study_name`` the study is named after the search preset and the command's other fixed
    overrides, so that running the same command again continues the same study.
    """
    if not is_search(config):
        return None
    sweeper = config.hydra.sweeper
    name = sweeper.get("study_name")
    if not name:
        preset = config.hydra.runtime.choices.get("search") or "search"
        fixed = Overrides.parse(list(config.hydra.overrides.task)).fixed
        name = " ".join([preset, *(line for line in fixed if not line.startswith(("search=", f"{RESUME}=")))])
    storage = sweeper.get("storage")
    if not storage:
        local = store.local_path(store.store_uri())
        storage = str((local.parent if local is not None else Path.cwd()) / JOURNAL)
    return StudyPlace(name, storage)


def check_storage(storage: str) -> None:
    """Whether the study's storage can be opened, without creating anything in it; and that it holds
    no password, which would travel with the sweep's settings into its logs and tags."""
    if store.shown(storage) != storage:
        raise ConfigError(
            f"hydra.sweeper.storage={store.shown(storage)} holds a password: give it as PGPASSWORD "
            "(or in ~/.pgpass) instead, or it would be logged with the search"
        )
    if "://" in storage:
        from sqlalchemy import create_engine  # only a database storage needs SQLAlchemy
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with create_engine(storage).connect():
                pass
        except (SQLAlchemyError, ImportError, ValueError) as error:
            reason = str(error).strip().splitlines()[0]
            raise ConfigError(f"cannot open the study's storage {storage}: {reason}") from None
        return
    folder = Path(storage).parent
    if not folder.is_dir():
        raise ConfigError(f"cannot open the study's storage {storage}: no directory {folder}")
