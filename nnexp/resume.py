"""Taking up a run or a whole sweep that did not finish: ``python -m nnexp.run resume=<run id>``.

A run is given back its own configuration (the overrides it recorded, composed again and checked
against the params it logged) and continues in the same MLflow run from its last checkpoint; a sweep
is launched again with its own overrides and launcher settings, and each of its jobs then finds its
run by job number: finished runs are left alone, unfinished ones continue from their checkpoints,
jobs that never started run. Nothing is needed but the run id and the store. A search's study
continues by running its command again (``nnexp.search``); its run id does the same.

``resume=<id> train.epochs=N`` with N larger than the run's target trains further, in the same run,
finished or not (unless the stopping rule ended it). MLflow params cannot change value, so the param
``train.epochs`` keeps the value the run started with; the target the run now trains to is its tag
``nnexp.train_epochs`` (and its ``config.yaml``).

Two processes must never write one run. A run still marked RUNNING is taken up only when the process
that ran it is gone: on the same host its pid (tag ``nnexp.pid``) must be dead; from another host, the
run must have logged nothing for ``STALE_SECONDS``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from nnexp import checkpoints, grammar, runs, store
from nnexp.engine import Network
from nnexp.engine.history import ETA
from nnexp.engine.training import TrainingState
from nnexp.errors import ConfigError
from nnexp.grammar import RESUME
from nnexp.handoff import SweepHandoff
from nnexp.tracking import run_params
from nnexp.vocabulary import Status, Tag

STALE_SECONDS = 600  # a RUNNING run on another host counts as dead after this long without a metric
CHANGEABLE = ("train.epochs",)  # the one setting a resume may change (to train further)


def requested(argv: Sequence[str]) -> str | None:
    """The run id of a ``resume=<id>`` on the command line, if any."""
    ids = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"{RESUME}=")]
    return ids[-1] if ids else None


def command_line(argv: Sequence[str]) -> list[str]:
    """The command line that takes up ``resume=<id>``: the run's (or sweep's) own recorded overrides,
    then the ones given now (only ``train.epochs`` and ``hydra.*``), then ``resume=<id>``. Any other
    command line comes back unchanged.

    Raises ``ConfigError`` (one line) when the run cannot be taken up, before anything is changed.
    """
    run_id = requested(argv)
    if run_id is None:
        return list(argv)
    given = [arg for arg in grammar.without_resume(argv) if arg not in ("-m", "--multirun")]
    refused = [arg for arg in given if arg.split("=", 1)[0] not in CHANGEABLE and not arg.startswith("hydra")]
    if refused:
        raise ConfigError(
            f"resume takes the run's own config; it may only change {', '.join(CHANGEABLE)} "
            f"(and hydra settings), not {' '.join(refused)}"
        )
    client = store.connect(store.store_uri())
    run = runs.get(client, run_id)
    if run.data.tags.get(Tag.SWEEP) == "true":
        if any(not arg.startswith("hydra") for arg in given):
            raise ConfigError(
                f"a sweep is resumed as it ran: only hydra settings may be given, not {' '.join(given)}"
            )
        command = ["-m", *recorded(run, Tag.HYDRA_OVERRIDES), *recorded(run, Tag.OVERRIDES), *given]
        if Tag.SEARCH in run.data.tags:  # a study continues when its command runs again
            more = any(arg.startswith("hydra.sweeper.n_trials=") for arg in given)
            refuse_unless_resumable(client, run, further=more, hint="a larger hydra.sweeper.n_trials")
            return command
        refuse_unless_resumable(client, run, further=False)
        return [*command, f"{RESUME}={run_id}"]
    epochs = [int(arg.split("=", 1)[1]) for arg in given if arg.startswith("train.epochs=")]
    if epochs and epochs[-1] < target_epochs(run):
        raise ConfigError(
            f"train.epochs={epochs[-1]} is below the {target_epochs(run)} epochs run {run_id} trains to"
        )
    further = bool(epochs) and epochs[-1] > target_epochs(run)
    refuse_unless_resumable(client, run, further, hint="a larger train.epochs")
    if not checkpoints.exists(client, run_id):
        raise ConfigError(f"run {run_id} has no checkpoint to resume from (it began before nnexp kept them)")
    return [*recorded(run, Tag.OVERRIDES), *given, f"{RESUME}={run_id}"]


def recorded(run: Run, tag: str) -> list[str]:
    """The overrides the run recorded in ``tag`` when it started."""
    return grammar.split(run.data.tags.get(tag, ""))


def target_epochs(run: Run) -> int:
    """The number of epochs the run trains to: its latest target, or its param."""
    return int(run.data.tags.get(Tag.TRAIN_EPOCHS) or run.data.params["train.epochs"])


def refuse_unless_resumable(client: MlflowClient, run: Run, further: bool, hint: str | None = None) -> None:
    """Raise ``ConfigError`` unless the run is one to take up: not finished (or to go further, which
    ``hint`` says how to ask for), and not live in another process."""
    run_id, status = run.info.run_id, run.info.status
    if status == Status.FINISHED and not further:
        what = "sweep" if run.data.tags.get(Tag.SWEEP) == "true" else "run"
        more = f" (give {hint} to go further)" if hint else ""
        raise ConfigError(f"{what} {run_id} already FINISHED: nothing to resume{more}")
    if status == Status.RUNNING and is_live(client, run):
        host, pid = run.data.tags.get(Tag.HOST), run.data.tags.get(Tag.PID)
        raise ConfigError(
            f"run {run_id} is RUNNING in process {pid} on {host}: two processes must not write one run"
        )


def is_live(client: MlflowClient, run: Run) -> bool:
    """Whether the process that runs ``run`` may still be at work (see the module's docstring)."""
    host, pid = run.data.tags.get(Tag.HOST), run.data.tags.get(Tag.PID)
    if host == socket.gethostname() and pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    history = client.get_metric_history(run.info.run_id, ETA)
    last = max([m.timestamp for m in history], default=run.info.start_time)
    return time.time() - last / 1000 < STALE_SECONDS


@dataclass
class Resumption:
    """The run a job takes up, and where from: its last checkpoint, or (a run killed before its first
    checkpoint) the start, in the same run. ``skip``: a finished job of a resumed sweep, left alone."""

    client: MlflowClient
    run: Run
    checkpoint: tuple[Network, TrainingState] | None
    skip: bool = False


def find(cfg: DictConfig, sweep: SweepHandoff | None, job_num: int) -> Resumption | None:
    """The run this job takes up, or None when it starts one afresh.

    On its own, a job takes up the run ``resume`` names, if any. In a sweep, a job always looks for
    its run by job number first: one exists when the sweep is resumed, and when a scheduler requeued
    the job (submitit runs it again with the same job number after a preemption or time-out).
    """
    if sweep is None:
        if cfg.get(RESUME) is None:
            return None
        client = store.connect(store.store_uri())
        run = runs.get(client, cfg.get(RESUME))
    else:
        client = sweep.client()
        found = runs.find(
            client, [sweep.experiment_id], {Tag.SWEEP_ID: sweep.parent_run_id, Tag.JOB: str(job_num)}
        )
        if not found:
            return None
        run = found[0]
        if run.info.status == Status.FINISHED:
            return Resumption(client, run, None, skip=True)
        refuse_unless_resumable(client, run, further=False)
    check_config_unchanged(cfg, run)
    if not checkpoints.exists(client, run.info.run_id):
        return Resumption(client, run, None)
    try:
        return Resumption(client, run, checkpoints.load(client, run.info.run_id))
    except checkpoints.CheckpointError as error:
        raise ConfigError(str(error)) from None


def check_config_unchanged(cfg: DictConfig, run: Run) -> None:
    """The config composed now must be the one the run logged (conf/ may have changed since)."""
    now = run_params(cfg)
    changed = [
        f"{key}: {value} -> {now.get(key)}"
        for key, value in run.data.params.items()
        if key not in CHANGEABLE and now.get(key) != value
    ]
    if changed:
        raise ConfigError(
            f"the config of run {run.info.run_id} is not what it started with ({'; '.join(changed)})"
        )
