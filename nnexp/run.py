"""The one entry point: train a network as configured in conf/, tracked in MLflow.

    python -m nnexp.run                                       # chapter 3's default net, 30 epochs
    python -m nnexp.run experiment=smoke cost=quadratic       # override any key of conf/
    python -m nnexp.run -m cost=quadratic,crossentropy        # a sweep: a parent run, one child per job
    python -m nnexp.run -m hydra/launcher=joblib hydra.launcher.n_jobs=2 seed=0,1,2,3   # jobs side by side

The store is ./mlflow.db (or $MLFLOW_TRACKING_URI). A run, a sweep or a search ends with its id, the UI
page of its runs and the command a user wants next (its report; after Ctrl-C, its resume).
`--verbose` also shows the libraries' own log lines (Hydra's launches, MLflow's INFO lines).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.entities import DatasetInput
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from nnexp import checkpoints, config, errors, grammar, lineage, outcome, process, resume, store, tracking
from nnexp.engine import DataError, Dataset, Network, sgd
from nnexp.engine.history import EPOCH, EPOCH_SECONDS, INITIAL, SPLITS, Metrics, key
from nnexp.engine.training import TrainingState
from nnexp.errors import ConfigError, UserError
from nnexp.handoff import SweepHandoff
from nnexp.study import StudyPlace
from nnexp.vocabulary import Status, Tag

if TYPE_CHECKING:
    from nnexp.search import TrialReporter

CONF = Path(__file__).resolve().parent.parent / "conf"  # absolute: found however this module is started
VERBOSE = "--verbose"  # the libraries' own log lines too (nnexp.process.LOG_LEVEL)

config.register()


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> tracking.RunResult:
    """Train one network (one job, in a sweep) and track it as one MLflow run.

    Returns the run's result: its ``objective`` (best validation accuracy) is what a sweeper
    optimises, and its history holds every epoch's metrics. A run that ends FAILED in a command of
    its own (not a sweep) exits with status 1, so that scripts and schedulers see it; one that cannot
    run (its data, its store) says so in one line. A job of a sweep that cannot run says so in one line
    naming the job, and the sweep goes on: its last lines count the jobs that failed, whatever
    launcher ran them.
    """
    process.prepare()  # in a sweep's workers too: they import this module for main, not run it
    job = HydraConfig.get()
    try:
        return run_job(cfg, job)
    except (UserError, MlflowException) as error:
        if job.mode != RunMode.MULTIRUN:  # exited here: Hydra would add a line of its own before it
            sys.exit(errors.say(error))
        overrides = " ".join(grammar.without_resume(job.overrides.task))
        failure = f"job {job.job.num} ({overrides}): {errors.line(error)}"
        print(failure, file=sys.stderr, flush=True)
        sweep = SweepHandoff.load(Path(job.sweep.dir))
        if sweep is not None:
            sweep.record_failure(job.job.num, failure)
        return tracking.RunResult("", Status.FAILED, ())


def run_job(cfg: DictConfig, job: DictConfig) -> tracking.RunResult:
    """``main``'s work: the job's run, created, or taken up from its checkpoint (saying where from), then
    trained, and its last lines (``say_ended``)."""
    c = config.validate(cfg)
    alone = job.mode != RunMode.MULTIRUN
    sweep = None if alone else SweepHandoff.load(Path(job.sweep.dir))
    label = run_name(grammar.without_resume(job.overrides.task), c.seed)  # a resume's: its new target
    taken_up = resume.find(cfg, sweep, job.job.get("num", 0))
    if taken_up is not None and taken_up.skip:
        print(f"{label}: run {taken_up.run.info.run_id} FINISHED before, left alone")
        return tracking.RunResult.of(taken_up.client, taken_up.run)
    reporter = trial_reporter(c, job, sweep)
    try:
        dataset = process.dataset(c.data.name, c.data.train_size, c.data.expand, c.dtype)
    except DataError as error:  # missing or corrupt files: one line, and no run created
        raise ConfigError(str(error)) from None
    if taken_up is not None and taken_up.checkpoint is not None:
        net, state = taken_up.checkpoint
    else:
        net, state = config.build_network(c), TrainingState()
    if taken_up is not None:
        run = tracking.TrackedRun.reopen(taken_up.client, taken_up.run, state.history, c.train.epochs)
        print(f"{label}: run {run.run_id} resumed from its checkpoint at epoch {state.epoch}", flush=True)
    else:
        run = start_run(cfg, c, job, sweep, lineage.dataset_input(c.data, dataset), label)
    threads = process.limit_blas_threads(blas_threads(job))
    live = sys.stdout.isatty() and threads is None
    hydra_dir = Path(job.runtime.output_dir) / job.output_subdir if job.output_subdir else None
    pruned = False  # stays so when training diverges: ending() swallows that, the run ends FAILED
    try:
        with tracking.ending(run):
            pruned = train(c.train, run, label, net, state, dataset, reporter, live)
            run.log_summary()
            run.log_outputs(net, OmegaConf.to_yaml(cfg, resolve=True), hydra_dir)
    except KeyboardInterrupt:
        if alone:  # a sweep's job leaves it to the sweep's last lines
            say_ended(run, label, c.train.epochs, pruned, alone)
        raise
    say_ended(run, label, c.train.epochs, pruned, alone)
    if run.status != Status.FINISHED and alone:
        sys.exit(1)
    return run.result(pruned)


def say_ended(run: tracking.TrackedRun, label: str, epochs: int, pruned: bool, alone: bool) -> None:
    """How the run ended, with its id, on stdout if it FINISHED, else on stderr. A run of its own adds
    the UI page of its runs and, as its last line, the command a user wants next (its report, or its
    resume after Ctrl-C); a sweep's job, its label, as its progress lines have it."""
    detail = {
        Status.FINISHED: outcome.trained(run.result().summary, pruned),
        Status.KILLED: f" after epoch {run.epochs} of {epochs}",
    }.get(run.status, f", {run.failure}")
    said = outcome.ended("run", run.run_id, run.status, detail)
    out = sys.stdout if run.status == Status.FINISHED else sys.stderr
    if alone:
        print(f"{said}: {store.runs_url(run.experiment_id)}", file=out)
        print(outcome.next_command(run.run_id, run.status, sweep=False), file=out, flush=True)
    else:
        print(f"{label}: {said}", file=out, flush=True)


class Pruned(Exception):
    """Stops training when a search's pruner says so: the run ends FINISHED with the epochs it trained."""


def trial_reporter(c: config.Config, job: DictConfig, sweep: SweepHandoff | None) -> TrialReporter | None:
    """The job's side of its search trial (``nnexp.search.TrialReporter``), or None outside a search."""
    if c.trial is None:
        return None
    if sweep is None or sweep.study_name is None:
        raise ConfigError(f"trial={c.trial}: only a search (-m search=...) sets trial")
    from nnexp.search import TrialReporter  # Optuna: only a search's jobs need it

    return TrialReporter(
        StudyPlace(sweep.study_name, sweep.study_storage), job.sweeper.get("pruner"), c.trial
    )


def blas_threads(job: DictConfig) -> int | None:
    """The BLAS threads this job may use: one per CPU a submitit launcher gives the job (SLURM gives one
    unless told), one when jobs run side by side (joblib), else None: BLAS's own choice, every core."""
    if "cpus_per_task" in job.launcher:
        return job.launcher.cpus_per_task or 1
    if job.mode == RunMode.MULTIRUN and job.launcher.get("n_jobs") not in (None, 1):
        return 1
    return None


def train(
    settings: config.TrainConfig,
    run: tracking.TrackedRun,
    label: str,
    net: Network,
    state: TrainingState,
    dataset: Dataset,
    reporter: TrialReporter | None,
    live: bool,
) -> bool:
    """Train to ``train.epochs`` from ``state``, checkpointing and logging every epoch (and reporting
    it to the search's trial, if any), each shown under ``label``; whether the search pruned the run.

    Each epoch is checkpointed before its metrics are logged: after a crash the store never holds
    an epoch that the checkpoint lacks, so a resume logs every epoch exactly once.
    """
    checkpointer = checkpoints.Checkpointer(run.client, run.run_id)
    with contextlib.closing(checkpointer), progress(label, settings.epochs, state.epoch, live) as show:
        if not state.history:
            checkpointer.save(net, state)  # epoch 0: a run killed in its first epoch starts over in place

        def on_epoch(metrics: Metrics) -> None:
            checkpointer.save(net, state)
            run.log_epoch(metrics)
            if metrics[EPOCH] == INITIAL:  # the untrained network's learning speeds: no epoch to show
                return
            show(metrics)
            if reporter is not None and reporter.should_prune(metrics):
                raise Pruned

        try:
            sgd(
                net,
                dataset,
                settings.epochs,
                settings.batch_size,
                settings.eta,
                momentum=settings.momentum,
                schedule=settings.schedule,
                early_stopping=settings.early_stopping,
                on_epoch=on_epoch,
                state=state,
                backend=settings.backend,
                learning_speed=settings.learning_speed,
                order=settings.order,
            )
        except Pruned:
            return True
    return False


def start_run(
    cfg: DictConfig,
    c: config.Config,
    job: DictConfig,
    sweep: SweepHandoff | None,
    data: DatasetInput,
    name: str,
) -> tracking.TrackedRun:
    """Create this job's run, named ``name``, with its data as its input: nested under the sweep's
    parent when a sweep launched it, else on its own in the store of the directory the command was
    started in."""
    if sweep is not None:
        client, experiment_id = sweep.client(), sweep.experiment_id
    else:
        client, experiment_id = store.open_experiment(store.store_uri(job.runtime.cwd), c.tracking.experiment)
    overrides = grammar.without_resume(job.overrides.task)
    run_tags = {
        Tag.OVERRIDES: grammar.join(overrides),
        Tag.SWEEP_ID: sweep.parent_run_id if sweep else "",
        Tag.JOB: str(job.job.get("num", 0)),
        Tag.SEED: str(c.seed),
        **lineage.source_tags(),
        Tag.TRAIN_EPOCHS: str(c.train.epochs),
    }
    if c.trial is not None:
        run_tags[Tag.TRIAL] = str(c.trial)
    if sweep is not None:
        run_tags[Tag.PARENT] = sweep.parent_run_id
    return tracking.TrackedRun.create(client, experiment_id, name, run_tags, tracking.run_params(cfg), data)


def run_name(overrides: Sequence[str], seed: int) -> str:
    """The overrides that make this run what it is, always with its seed: "cost=quadratic seed=0"; one
    per key, numbers to 4 significant digits (``grammar.Overrides.shown``)."""
    shown = grammar.Overrides.parse(overrides).shown
    named = shown if any(line.startswith("seed=") for line in shown) else [*shown, f"seed={seed}"]
    return " ".join(named) if shown else f"default seed={seed}"


@contextlib.contextmanager
def progress(name: str, epochs: int, done: int, live: bool) -> Iterator[Callable[[Metrics], None]]:
    """A display of each epoch's accuracies: a tqdm bar (on a terminal, one job at a time), else one
    plain line per epoch (log files, CI and parallel jobs read better without carriage returns).
    ``done``: the epochs trained before (a resumed run)."""
    if not live:
        yield lambda metrics: print(
            f"{name} | epoch {metrics[EPOCH]}/{epochs} {accuracies(metrics)}", flush=True
        )
        return
    with tqdm(total=epochs, initial=done, desc=name, unit="epoch", file=sys.stdout) as bar:

        def show(metrics: Metrics) -> None:
            bar.set_postfix_str(accuracies(metrics), refresh=False)
            bar.update()

        yield show


def accuracies(metrics: Metrics) -> str:
    """ "train 95.10% validation 94.80% test 94.70% (0.3s)": one epoch's line of the progress display."""
    shown = [
        f"{split} {metrics[key(split, 'accuracy')]:.2%}"
        for split in SPLITS
        if key(split, "accuracy") in metrics
    ]
    return " ".join(shown) + f" ({metrics[EPOCH_SECONDS]:.1f}s)"


def command(argv: Sequence[str]) -> None:
    """``python -m nnexp.run *argv``: a ``resume=<id>`` becomes the run's own command line, then Hydra
    runs ``main`` (or a sweep of it); bad input ends in one line and exit status 1, Ctrl-C in exit
    status 130 (SIGTERM in 143) once the run or sweep has said how to resume it (no traceback).
    ``--verbose`` shows the libraries' own log lines too."""
    if VERBOSE in argv:
        os.environ[process.LOG_LEVEL] = "INFO"
    process.prepare()
    process.stop_on_sigterm()
    try:
        with config.one_line_errors():
            sys.argv[1:] = resume.command_line([arg for arg in argv if arg != VERBOSE])
            main()
    except KeyboardInterrupt:
        sys.exit(process.exit_status())


if __name__ == "__main__":
    command(sys.argv[1:])
