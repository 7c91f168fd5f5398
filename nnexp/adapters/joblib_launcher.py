"""The joblib launcher's own ``joblib.Parallel`` settings: checked against hydra-joblib-launcher 1.2.0
(pinned ``hydra-joblib-launcher==1.2.0``).

nnexp starts a sweep's joblib workers before the launcher does (``nnexp.callbacks.StartWorkers``), so
that they import, load the data and open the store while the sweep is being set up. joblib hands the
launcher those same workers only if its ``Parallel`` has the very same settings; the launcher builds
them in its private ``_core.launch``: the ``hydra.launcher`` keys, the backend forced to loky, and
``_core.process_joblib_cfg`` turning some values into integers. This module does the same, with that
private function.
"""

from __future__ import annotations

import os
from typing import Any

from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
from omegaconf import DictConfig, OmegaConf

TARGET = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def is_joblib(launcher: DictConfig) -> bool:
    return launcher.get("_target_") == TARGET


def parallel_settings(launcher: DictConfig) -> dict[str, Any]:
    """The keyword arguments of the launcher's ``joblib.Parallel`` for ``hydra.launcher``."""
    settings = {**OmegaConf.to_container(launcher, resolve=True), "backend": "loky"}
    settings.pop("_target_")
    process_joblib_cfg(settings)
    return settings


def worker_count(settings: dict[str, Any]) -> int:
    """How many worker processes those settings start (joblib's n_jobs=-1: one per core)."""
    n_jobs = settings["n_jobs"]
    return n_jobs if n_jobs > 0 else (os.cpu_count() or 1) + 1 + n_jobs
