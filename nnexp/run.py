"""The one entry point: train a network as configured in conf/, tracked in MLflow.

    python -m nnexp.run                                       # chapter 3's default net, 30 epochs
    python -m nnexp.run experiment=smoke cost=quadratic       # override any key of conf/
    python -m nnexp.run -m cost=quadratic,crossentropy        # a sweep: a parent run, one child per job
    python -m nnexp.run -m hydra/launcher=joblib hydra.launcher.n_jobs=2 seed=0,1,2,3   # jobs side by side

The store is ./mlflow.db (or $MLFLOW_TRACKING_URI); each run ends by printing the UI page of its runs.
"""

from __future__ import annotations

import contextlib
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

from nnexp import checkpoints, config, errors, grammar, lineage, process, resume, store, tracking
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

config.register()


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> tracking.RunResult:
    """Train one network (one job, in a sweep) and track it as one MLflow run.

    Returns the run's result: its ``objective`` (best validation accuracy) is what a sweeper
    optimises, and its history holds every epoch's metrics. A run that ends FAILED in a command of
    its own (not a sweep) exits with status 1, so that scripts and schedulers see it. A job of a sweep
    that cannot run (its data, its store, its config) says so in one line naming the job, and the
    sweep goes on: its last line counts the jobs that failed, whatever launcher ran them.
    """
    process.prepare()  # in a sweep's workers too: they import this module for main, not run it
    job = HydraConfig.get()
    if job.mode != RunMode.MULTIRUN:
        return run_job(cfg, job)
    try:
        return run_job(cfg, job)
    except (UserError, MlflowException) as error:
        overrides = " ".join(grammar.without_resume(job.overrides.task))
        print(f"job {job.job.num} ({overrides}): {errors.line(error)}", file=sys.stderr, flush=True)
        return tracking.RunResult("", Status.FAILED, ())


def run_job(cfg: DictConfig, job: DictConfig) -> tracking.RunResult:
    """``main``'s work: the job's run, created, or taken up from its checkpoint, then trained."""
    c = config.validate(cfg)
    sweep = SweepHandoff.load(Path(job.sweep.dir)) if job.mode == RunMode.MULTIRUN else None
    taken_up = resume.find(cfg, sweep, job.job.get("num", 0))
    if taken_up is not None and taken_up.skip:
        print(f"{taken_up.run.info.run_name}: FINISHED before, left alone")
        return tracking.RunResult.of(taken_up.client, taken_up.run)
    reporter = trial_reporter(c, job, sweep)
    try:
        dataset = process.dataset(c.data.name, c.data.train_size, c.data.expand, c.dtype)
    except DataError as error:  # missing or corrupt files: one line, and no run created
        raise ConfigError(str(error)) from None
    if taken_up is not None and taken_up.checkpoint is not None:
        net, state = taken_up.checkpoint
    else:
        net, state = config.build_network(c, dataset.n_inputs, dataset.n_classes), TrainingState()
    if taken_up is not None:
        run = tracking.TrackedRun.reopen(taken_up.client, taken_up.run, state.history, c.train.epochs)
    else:
        run = start_run(cfg, c, job, sweep, lineage.dataset_input(c.data, dataset))
    threads = process.limit_blas_threads(blas_threads(job))
    output_dir = Path(job.runtime.output_dir)
    pruned = False  # stays so when training diverges: ending() swallows that, the run ends FAILED
    with tracking.ending(run):
        pruned = train(
            c.train, run, net, state, dataset, reporter, live=sys.stdout.isatty() and threads is None
        )
        run.log_summary()
        run.log_outputs(net, output_dir, OmegaConf.to_yaml(cfg, resolve=True), output_dir / job.output_subdir)
    if run.failure is not None:
        print(f"{run.name}: FAILED, {run.failure}", file=sys.stderr)
    print(f"{run.name}: {store.runs_url(run.experiment_id)}")
    if run.status != Status.FINISHED and job.mode == RunMode.RUN:
        sys.exit(1)
    return run.result(pruned)


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
    net: Network,
    state: TrainingState,
    dataset: Dataset,
    reporter: TrialReporter | None,
    live: bool,
) -> bool:
    """Train to ``train.epochs`` from ``state``, checkpointing and logging every epoch (and reporting
    it to the search's trial, if any); whether the search pruned the run.

    Each epoch is checkpointed before its metrics are logged: after a crash the store never holds
    an epoch that the checkpoint lacks, so a resume logs every epoch exactly once.
    """
    checkpointer = checkpoints.Checkpointer(run.client, run.run_id)
    with contextlib.closing(checkpointer), progress(run.name, settings.epochs, state.epoch, live) as show:
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
            )
        except Pruned:
            return True
    return False


def start_run(
    cfg: DictConfig, c: config.Config, job: DictConfig, sweep: SweepHandoff | None, data: DatasetInput
) -> tracking.TrackedRun:
    """Create this job's run, with its data as its input: nested under the sweep's parent when a sweep
    launched it, else on its own in the store of the directory the command was started in."""
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
    name = run_name(overrides, c.seed)
    return tracking.TrackedRun.create(client, experiment_id, name, run_tags, tracking.run_params(cfg), data)


def run_name(overrides: list[str], seed: int) -> str:
    """The overrides that make this run what it is, always with its seed: "cost=quadratic seed=0"."""
    named = overrides if any(o.startswith("seed=") for o in overrides) else [*overrides, f"seed={seed}"]
    return " ".join(named) if overrides else f"default seed={seed}"


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
    runs ``main`` (or a sweep of it); bad input ends in one line and exit status 1."""
    process.prepare()
    with config.one_line_errors():
        sys.argv[1:] = resume.command_line(argv)
        main()


if __name__ == "__main__":
    command(sys.argv[1:])
