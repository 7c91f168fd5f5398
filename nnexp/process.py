"""What an nnexp process sets up once, and what it keeps from one job to the next.

The entry points (a run, a sweep's jobs in their workers, the report, the book's results) call
``prepare`` first: it is the one place that sets the environment MLflow reads, the warnings nnexp
silences, and how the process exits. Nothing in the harness does any of this on import.

The joblib launcher runs a sweep's jobs in worker processes that it reuses: a worker's second job
finds the imports done, the compiled training loop loaded and, here, the data decoded. It keeps
nothing of a run: every job builds its own network, state and MLflow run.
"""

from __future__ import annotations

import atexit
import functools
import gc
import logging
import os
import signal
import threading
import warnings

from threadpoolctl import threadpool_limits

from nnexp import tether
from nnexp.engine import Dataset, load

# The MLflow client otherwise retries an unanswering server for minutes (7 retries, backoff factor 2,
# 120 s timeouts): a few quick retries ride out a hiccup, and a lost server fails the job soon. MLflow
# also draws a progress bar for every artifact it copies: in a run's output, one per run is noise.
MLFLOW_ENVIRONMENT = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# The level of the libraries' own log lines: Hydra's (a sweep's "Launching 2 jobs locally", each job's
# overrides), its jobs' (run.log) and MLflow's ("Creating initial MLflow database tables..."). WARNING
# keeps a command's output to nnexp's own lines; `python -m nnexp.run --verbose` sets INFO. Hydra reads
# it in conf/config.yaml; MLflow's own MLFLOW_LOGGING_LEVEL follows it unless set. A sweep's jobs
# inherit it with the environment.
LOG_LEVEL = "NNEXP_LOG_LEVEL"


@functools.cache
def prepare() -> None:
    """Set up this process for nnexp, once (later calls do nothing): MLflow's environment (a value the
    user set is kept), the libraries' log level, Hydra's warning about the submitit launcher configs,
    a note of Ctrl-C (``interrupted``) and a quick exit.

    ``conf/hydra/launcher/submitit_*.yaml`` set nnexp's defaults on the submitit plugin's launchers of
    the same names: Hydra 1.3 merges them onto the plugin's schema, and warns that it will stop doing
    so; hydra-core is pinned to 1.3.8, where it does.
    """
    tether.follow()  # a sweep's job: dies with the process that launched the sweep
    for name, value in MLFLOW_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", os.environ.setdefault(LOG_LEVEL, "WARNING"))
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())  # set as it was imported
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/submitit_(local|slurm)' is validated", category=UserWarning
    )
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _note_interrupt)  # (a SIGINT the shell made ignored stays so)
    atexit.register(gc.freeze)


# ``prepare``'s last line, explained: a process that has imported MLflow, Hydra, numba and matplotlib
# holds a few million objects, and at exit the interpreter collects garbage over all of them once
# more, for nothing (a 1-epoch run took 4.9 s with that collection and 3.9 s without). Freezing them as
# the process exits skips it. Objects are still released as their last references go and the other exit
# handlers (logging's, MLflow's) still run; only garbage held in reference cycles is left to the
# operating system, and Python never promises to finalize objects still alive at exit anyway.


_interrupts: list[int] = []  # the SIGINTs (and SIGTERMs: ``stop_on_sigterm``) this process received


def _note_interrupt(signum: int, frame: object) -> None:
    """Python's own Ctrl-C (a ``KeyboardInterrupt``), noted first."""
    _interrupts.append(signum)
    signal.default_int_handler(signum, frame)


def stop_on_sigterm() -> None:
    """In the process a user started: SIGTERM (``kill``, a scheduler's stop) interrupts it as Ctrl-C
    does, so that its run, or its sweep and the sweep's runs here, end KILLED instead of being left
    RUNNING by Python's default, which dies on the spot. Not in a sweep's workers: loky stops its own
    with SIGTERM, and submitit's jobs ignore it (SLURM sends it ahead of the SIGUSR2 that requeues)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _note_interrupt)


def interrupted() -> bool:
    """Whether Ctrl-C (or a SIGTERM it stands for) reached this process: a sweep's exit hook then ends
    its parent run KILLED, not FAILED. (Once caught, a ``KeyboardInterrupt`` leaves no trace but this.)"""
    return bool(_interrupts)


def interruption() -> str:
    """What interrupted this process, as a KILLED run's failure_reason says it."""
    return "interrupted" if not _interrupts or _interrupts[-1] == signal.SIGINT else "terminated (SIGTERM)"


def exit_status() -> int:
    """The status an interrupted process exits with: 128 + the signal, as a shell reports a process that
    signal ended (130 after Ctrl-C, 143 after SIGTERM)."""
    return 128 + (_interrupts[-1] if _interrupts else signal.SIGINT)


@functools.lru_cache(maxsize=1)
def dataset(name: str, train_size: int | None, expand: bool, dtype: str) -> Dataset:
    """The dataset, kept for the process's next job (one at a time: expanded MNIST takes a gigabyte).
    Its arrays are made read-only, so that no job can change what the next one trains on."""
    loaded = load(name, train_size=train_size, expand=expand, dtype=dtype)
    for split in (loaded.train, loaded.validation, loaded.test):
        split.pixels.flags.writeable = split.y.flags.writeable = False
    return loaded


def limit_blas_threads(threads: int | None) -> int | None:
    """Limit the BLAS threads of this process (its job and a worker's next jobs) to ``threads``, or
    leave BLAS its own choice (every core) for None; returns ``threads``. Jobs side by side that each
    start a thread per core fight over the cores and all run slower. (Set and restored around each
    job instead, the second wave of a sweep's jobs ran twice as slow.)"""
    if threads is not None:
        threadpool_limits(limits=threads)
    return threads
