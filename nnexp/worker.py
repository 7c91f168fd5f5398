"""What a process keeps from one job to the next, and nothing else.

The joblib launcher runs a sweep's jobs in worker processes that it reuses: a worker's second job finds
the imports done, the compiled training loop loaded and, here, the data decoded. It keeps nothing of a
run: every job builds its own network, state and MLflow run.
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import threading
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from joblib import Parallel, delayed
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from nnexp import store
from nnexp.engine import Dataset, load, sgd


def exit_without_collecting() -> None:
    """Let this process exit without the interpreter's last garbage collections.

    A process that has imported MLflow, Hydra, numba and matplotlib holds a few million objects; at
    exit, the interpreter collects garbage over all of them once more, for nothing: a 1-epoch run took
    4.9 s with that collection and 3.9 s without. Freezing them (``gc.freeze``: the collector no longer
    looks at them) as the process exits skips it. Objects are still released as their last
    references go, and the other exit handlers (logging's, MLflow's) still run; only garbage held in
    reference cycles is left to the operating system, and Python never promises to finalize objects
    still alive at exit anyway. Called by the entry points, not by the engine, which leaves its
    users' processes alone.
    """
    atexit.register(gc.freeze)


@functools.lru_cache(maxsize=1)
def dataset(name: str, train_size: int | None, expand: bool, dtype: str) -> Dataset:
    """The dataset, kept for the process's next job (one at a time: expanded MNIST takes a gigabyte).
    Its arrays are made read-only, so that no job can change what the next one trains on."""
    loaded = load(name, train_size=train_size, expand=expand, dtype=dtype)
    for split in (loaded.train, loaded.validation, loaded.test):
        split.pixels.flags.writeable = split.y.flags.writeable = False
    return loaded


def limit_blas_threads(job: DictConfig) -> int | None:
    """Limit the BLAS threads this job (and the worker's next jobs) may use, and say to how many: one
    per CPU a submitit launcher gives the job (SLURM gives one unless told), one when jobs run side by
    side (joblib), else no limit: BLAS's own choice, every core. Jobs side by side that each start a
    thread per core fight over the cores and all run slower. (Set and restored around each job
    instead, the second wave of a sweep's jobs ran twice as slow.)"""
    if "cpus_per_task" in job.launcher:
        threads = job.launcher.cpus_per_task or 1
    elif job.mode == RunMode.MULTIRUN and job.launcher.get("n_jobs") not in (None, 1):
        threads = 1
    else:
        return None
    threadpool_limits(limits=threads)
    return threads


JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


class StartWorkers(Callback):
    """Start the joblib launcher's workers as a sweep starts, in the background: each imports, loads
    the data, loads the compiled training loop and opens the store while this process validates the
    jobs and creates the sweep's run. Otherwise a worker does all that only once its first job
    arrives, seconds the sweep waits for (more than a short run takes to train).

    The warm-up goes through ``joblib.Parallel`` with the launcher's own settings, so that the
    launcher then finds the same workers (joblib reuses its executor when the settings are the same).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.launcher.get("_target_") != JOBLIB:
            return
        from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

        settings = {**OmegaConf.to_container(config.hydra.launcher, resolve=True), "backend": "loky"}
        settings.pop("_target_")
        process_joblib_cfg(settings)
        task = OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
        workers = settings["n_jobs"] if settings["n_jobs"] > 0 else os.cpu_count()
        calls = [delayed(warm_up)(task, store.store_uri()) for _ in range(workers)]
        threading.Thread(target=Parallel(**settings), args=(calls,), daemon=True).start()


def warm_up(task: dict, uri: str) -> None:
    """In a worker: what its first job would otherwise pay for (see ``StartWorkers``)."""
    from nnexp import config, run  # the job's own imports: MLflow, Hydra, the harness

    c = config.validate(OmegaConf.create(task))
    loaded = dataset(c.data.name, c.data.train_size, c.data.expand, c.dtype)
    net = run.build_network(c, loaded.n_inputs, loaded.n_classes)
    train = c.train  # no epoch: sgd only loads (or compiles) its training loop
    sgd(net, loaded, 0, train.batch_size, train.eta, train.momentum, backend=train.backend)
    MlflowClient(uri).search_experiments(max_results=1)  # sets up MLflow's store
