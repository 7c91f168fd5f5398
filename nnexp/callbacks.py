"""The Hydra callbacks of a command (listed in ``conf/config.yaml``, run in the launching process):
validate everything before anything is created, start a joblib sweep's workers early, and keep a
sweep's parent run.

``ValidateCallback`` comes first: bad input exits with one line before Hydra creates an output
directory or ``SweepCallback`` an MLflow run. Hydra turns an exception raised by a callback into a
warning and carries on, so these callbacks stop a command with ``SystemExit`` (its one-line message,
exit status 1), never by raising.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from joblib import Parallel, delayed
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from nnexp import grammar, handoff, lineage, process, report, runs, store, tether
from nnexp.adapters import joblib_launcher
from nnexp.config import ACCEPTED, build_network, describe, sweep_jobs, validate
from nnexp.engine import sgd
from nnexp.errors import ConfigError, UserError, line
from nnexp.handoff import SweepHandoff
from nnexp.outcome import ended, next_command, study_outcome, sweep_outcome
from nnexp.study import is_search, study_of
from nnexp.vocabulary import Status, Tag

JOBS = "jobs.json"  # a sweep's parent run's artifact: every job's overrides, in job order


class ValidateCallback(Callback):
    """Rejects bad input in the launching process, before anything is created: the config of a run (and
    what only a sweep may set); of a sweep, every job's (and a search's space and settings); and the
    store."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            validate(config)
            refuse_sweep_settings(config)
            check_store(config)
        except UserError as error:
            sys.exit(line(error))

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        def check(overrides: list[str]) -> None:
            try:
                validate(compose(config_name=config_name, overrides=overrides))
            except HydraException as error:
                raise UserError(f"{describe(error)} (in the job {' '.join(overrides)})") from None

        try:
            jobs = sweep_jobs(config)
            if is_search(config):
                from nnexp import search  # Optuna: only a search needs it

                search.check(config, check)
            for overrides in jobs:
                check(overrides)
            check_store(config)
        except HydraException as error:  # ours, or a malformed sweep grammar
            sys.exit(describe(error))


def refuse_sweep_settings(config: DictConfig) -> None:
    """``ConfigError`` for what only a sweep sets, given to a run of its own: a search (without ``-m``
    its preset would be one run at its fixed values), and a search's ``trial``."""
    if is_search(config):
        given = [*config.hydra.overrides.hydra, *config.hydra.overrides.task]
        command = grammar.join(["-m", *(arg for arg in given if not arg.startswith("hydra.mode="))])
        raise ConfigError(f"a search runs as a sweep, with -m: python -m nnexp.run {command}")
    if config.trial is not None:
        raise ConfigError(f"invalid trial={config.trial}: accepted {ACCEPTED['trial'].words}")


def check_store(config: DictConfig) -> None:
    """``StoreError`` if the MLflow store cannot be used (see ``store.check``)."""
    store.check(store.store_uri(), config.tracking.experiment)


class StartWorkers(Callback):
    """Tie a sweep's job processes to this process, and start the joblib launcher's workers early.

    The jobs of a launcher that runs them on this machine (joblib's workers, submitit_local's
    processes) die with this process, however it dies (``nnexp.tether``); SLURM's jobs outlive it.

    The joblib launcher's workers start as the sweep starts, in the background: each imports, loads
    the data, loads the compiled training loop and opens the store while this process validates the
    jobs and creates the sweep's run. Otherwise a worker does all that only once its first job
    arrives, seconds the sweep waits for (more than a short run takes to train). The warm-up goes
    through ``joblib.Parallel`` with the launcher's own settings, so that the launcher then finds the
    same workers (joblib reuses its executor when the settings are the same).
    """

    SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        tether.tie_jobs(config.hydra.launcher.get("_target_") != self.SLURM)
        if not joblib_launcher.is_joblib(config.hydra.launcher):
            return
        settings = joblib_launcher.parallel_settings(config.hydra.launcher)
        task = OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
        calls = [
            delayed(warm_up)(task, store.store_uri()) for _ in range(joblib_launcher.worker_count(settings))
        ]
        threading.Thread(target=warm_up_all, args=(Parallel(**settings), calls), daemon=True).start()


def warm_up_all(parallel: Parallel, calls: list) -> None:
    """The warm-up, in the background: cut short (Ctrl-C shuts the workers down under it) or failed, it
    only leaves the jobs their start-up to do, so it says nothing."""
    with contextlib.suppress(Exception):
        parallel(calls)


def warm_up(task: dict, uri: str) -> None:
    """In a worker: what its first job would otherwise pay for (see ``StartWorkers``). It never raises,
    whatever fails: an error in any call of a ``joblib.Parallel`` makes joblib kill the pool's workers,
    which are the launcher's too, under its running jobs. What failed here (data or a store that cannot
    be had, or anything else) is left for the jobs, which report it in their lines if it fails again."""
    with contextlib.suppress(Exception):
        process.prepare()
        c = validate(OmegaConf.create(task))
        store.open_store(uri)
        loaded = process.dataset(c.data.name, c.data.train_size, c.data.expand, c.dtype)
        net = build_network(c)
        train = c.train  # no epoch: sgd only loads (or compiles) its training loop
        sgd(net, loaded, 0, train.batch_size, train.eta, train.momentum, backend=train.backend)


class SweepCallback(Callback):
    """Opens a sweep's parent run before the jobs (or reopens it, for ``resume=<sweep id>``), and
    closes it with the comparison report of its children after them.

    In the launching process, before any job starts, it sets up the store (a fresh sqlite store cannot
    be set up by parallel jobs at once), creates the experiment and the parent run, and leaves a
    ``SweepHandoff`` in the sweep directory for the jobs. A parent that cannot be created stops the
    sweep rather than letting the jobs run untracked, and a report that fails still lets the parent
    end. Hydra skips ``on_multirun_end`` when a job raises, so an exit hook ends a parent that is still
    open: FAILED, or KILLED after Ctrl-C. The sweep's last lines give its id, how many of its runs
    failed (if any did, the command exits with status 1) and the command a user wants next: its
    report, or after Ctrl-C its resume.
    """

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.sweep: SweepHandoff | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            Path(config.hydra.sweep.dir).mkdir(parents=True)  # this sweep's own, or an error
        except FileExistsError:
            sys.exit(f"the sweep directory {config.hydra.sweep.dir} is another sweep's: start again")
        try:
            uri = store.store_uri()
            self.client, experiment_id = store.open_experiment(uri, config.tracking.experiment)
            study = study_of(config)
            if study is not None:
                parent_id = self._study_parent(config, experiment_id, study.name)
            elif config.get(grammar.RESUME):
                parent_id = self._reopen(config, config.get(grammar.RESUME))
            else:
                parent_id = self._create(config, experiment_id, {Tag.SWEEP: "true"}).info.run_id
                self.client.log_dict(parent_id, {"jobs": jobs_of(config)}, JOBS)
            where = (study.name, study.storage) if study is not None else (None, None)
            self.sweep = SweepHandoff(uri, experiment_id, parent_id, *where, handoff.stderr_stream())
            atexit.register(self._end_if_open)
            self.sweep.save(Path(config.hydra.sweep.dir))
        except Exception as error:  # any: Hydra would only warn, and the jobs would run untracked
            with contextlib.suppress(OSError):
                Path(config.hydra.sweep.dir).rmdir()  # nothing left behind
            sys.exit(f"cannot start the sweep's MLflow run: {line(error)}")

    def _create(self, config: DictConfig, experiment_id: str, kind: dict[str, str]) -> Run:
        """A new parent run, with what a resume needs: its overrides and launcher settings."""
        overrides = grammar.join(config.hydra.overrides.task)
        run_tags = {
            **kind,
            Tag.OVERRIDES: overrides,
            Tag.HYDRA_OVERRIDES: grammar.join(config.hydra.overrides.hydra),
            **lineage.source_tags(),
            **runs.process_tags(),
        }
        return self.client.create_run(experiment_id, run_name=f"sweep {overrides}".strip(), tags=run_tags)

    def _study_parent(self, config: DictConfig, experiment_id: str, study: str) -> str:
        """The search's parent run: one per study, continued (RUNNING again) when the study continues."""
        found = runs.find(self.client, [experiment_id], {Tag.SEARCH: study})
        if not found:
            return self._create(config, experiment_id, {Tag.SWEEP: "true", Tag.SEARCH: study}).info.run_id
        runs.take_up(self.client, found[0].info.run_id)
        return found[0].info.run_id

    def _reopen(self, config: DictConfig, parent_id: str) -> str:
        """The resumed sweep's parent, RUNNING again, once its job list is checked to be the same."""
        recorded = self._recorded_jobs(parent_id)
        if recorded is not None and recorded != jobs_of(config):
            sys.exit(
                f"sweep {parent_id}: its jobs are no longer the ones it started with (has conf/ changed?)"
            )
        for key in self.client.get_run(parent_id).data.tags:
            if key.startswith(Tag.FAILED_JOB):  # the jobs run again: their failures are history
                self.client.delete_tag(parent_id, key)
        runs.take_up(self.client, parent_id)
        return parent_id

    def _recorded_jobs(self, parent_id: str) -> list[list[str]] | None:
        if not any(artifact.path == JOBS for artifact in self.client.list_artifacts(parent_id)):
            return None  # a sweep from before job lists were kept
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(self.client.download_artifacts(parent_id, JOBS, tmp)).read_text())["jobs"]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        parent = self.client.get_run(self.sweep.parent_run_id)
        for _, failure in sorted(
            (int(key.removeprefix(Tag.FAILED_JOB)), failure)
            for key, failure in parent.data.tags.items()
            if key.startswith(Tag.FAILED_JOB)
        ):
            print(failure, file=sys.stderr)  # a job's whose own output went elsewhere (submitit's logs)
        children = runs.children(self.client, parent)
        study = parent.data.tags.get(Tag.SEARCH)
        if study:
            outcome = study_outcome(study, parent, children)
        else:
            outcome = sweep_outcome(children, len(jobs_of(config)))
        try:
            if children:
                run_ids = [child.info.run_id for child in children]
                with tempfile.TemporaryDirectory() as tmp:
                    for path in report.write_report(self.client, run_ids, tmp, parent.info.run_name):
                        self.client.log_artifact(parent.info.run_id, str(path))
        finally:
            self._end(Status.FINISHED if outcome.ok else Status.FAILED, f", {outcome.line}")
        if not outcome.ok:
            sys.exit(1)

    def _end_if_open(self) -> None:
        """The exit hook: the sweep stopped before ``on_multirun_end`` (a job raised, or Ctrl-C). Its jobs
        on this machine die with this process (``nnexp.tether``; joblib stops its workers on Ctrl-C
        before they can end their runs), so their runs still RUNNING end with the parent, as it does."""
        if self.sweep is not None:
            status = Status.KILLED if process.interrupted() else Status.FAILED
            here = runs.process_tags()[Tag.HOST]
            for child in runs.children(self.client, self.client.get_run(self.sweep.parent_run_id)):
                if child.info.status == Status.RUNNING and child.data.tags.get(Tag.HOST) == here:
                    self.client.set_terminated(child.info.run_id, status)
            self._end(status)

    def _end(self, status: str, detail: str = "") -> None:
        """End the parent run, and say so: its id, how it ended, where to see it, what to do next."""
        parent_id, experiment_id = self.sweep.parent_run_id, self.sweep.experiment_id
        self.client.set_terminated(parent_id, status)
        self.sweep = None
        out = sys.stdout if status == Status.FINISHED else sys.stderr
        print(f"{ended('sweep', parent_id, status, detail)}: {store.runs_url(experiment_id)}", file=out)
        print(next_command(parent_id, status, sweep=True), file=out, flush=True)


def jobs_of(config: DictConfig) -> list[list[str]]:
    """The sweep's job list as it records it: every job's overrides, but ``resume``."""
    return [grammar.without_resume(job) for job in sweep_jobs(config)]
