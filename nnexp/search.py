"""Hyper-parameter search: an Optuna study run as a Hydra sweep, every trial a run in MLflow.

    python -m nnexp.run -m search=ch3_eta_lmbda                       # a preset of conf/search/
    python -m nnexp.run -m search=ch3_eta_lmbda hydra.sweeper.n_trials=40 'activation=choice(sigmoid,tanh)'

Chapter 3 of the book chooses eta, lmbda and the rest by hand ("a broad strategy") and names the
automated alternatives; this is one. ``Search`` is a Hydra sweeper (its door in ``hydra_plugins``)
that drives Optuna through its ask/tell interface: it asks the study for ``n_jobs`` trials, launches
them as jobs through the configured launcher (basic, joblib, submitit), and tells the study how each
ended. A job reopens its own trial from the study's storage (``TrialReporter``), reports its
validation accuracy after every epoch and stops as soon as the pruner says so. The objective is the
best validation accuracy: test data never enters the search.

The study lives in a journal file beside the MLflow store (``optuna.journal``), or in the database
``hydra.sweeper.storage`` names. Running the same command again continues the same study:
``n_trials`` is the study's total, and trials a crash left RUNNING are failed and tried again.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from mlflow.entities import Metric, Run, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from nnexp import store, tags
from nnexp.config import ConfigError
from nnexp.engine.history import EPOCH, OBJECTIVE, key
from nnexp.plots import plot_trials
from nnexp.tracking import BEST_TRIAL, FAILED, FINISHED, RUNNING, RunResult

SWEEPER = "hydra_plugins.nnexp_search.SearchSweeper"  # hydra/sweeper=nnexp_optuna
JOURNAL = "optuna.journal"  # the default storage, beside the MLflow store
INTERRUPTED = "interrupted"  # a trial's user attribute: failed because a crash left it RUNNING

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- Where the study is -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyPlace:
    """A study's name and storage: what the driver and every job need to reach the same study."""

    name: str
    storage: str  # a database URL (sqlite:///, postgresql://...) or the path of a journal file

    def open(self) -> optuna.storages.BaseStorage:
        """The study's storage: an RDB for a URL, Optuna's JournalStorage for a file (safe for parallel
        workers and on network file systems, where Optuna advises against sqlite)."""
        if "://" in self.storage:
            return optuna.storages.RDBStorage(self.storage)
        backend = optuna.storages.journal.JournalFileBackend(self.storage)
        return optuna.storages.JournalStorage(backend)


def is_search(config: DictConfig) -> bool:
    return config.hydra.sweeper.get("_target_") == SWEEPER


def study_of(config: DictConfig) -> StudyPlace | None:
    """Where the search of ``config`` keeps its study; None when the sweep is not a search.

    Without ``study_name`` the study is named after the search preset and the command's other task
    overrides, so that running the same command again continues the same study.
    """
    if not is_search(config):
        return None
    sweeper = config.hydra.sweeper
    name = sweeper.get("study_name")
    if not name:
        preset = config.hydra.runtime.choices.get("search") or "search"
        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
        name = " ".join([preset, *(line for line in fixed if not line.startswith(("search=", "resume=")))])
    storage = sweeper.get("storage")
    if not storage:
        local = store.local_path(store.store_uri())
        storage = str((local.parent if local is not None else Path.cwd()) / JOURNAL)
    return StudyPlace(name, storage)


# --- The search space -------------------------------------------------------------------------------


def search_space(
    config: DictConfig, arguments: Sequence[str]
) -> tuple[list[str], dict[str, BaseDistribution]]:
    """(the fixed overrides of every trial, the parameters to search and their distributions), from
    ``hydra.sweeper.params`` then the command line (a key given on both takes the command line's).

    Raises ``ConfigError`` for an empty or inverted interval, or log on a non-positive bound.
    """
    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    fixed: dict[str, str] = {}
    space: dict[str, BaseDistribution] = {}
    for override in parser.parse_overrides(lines):
        key = override.get_key_element()
        fixed.pop(key, None)
        space.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
    return list(fixed.values()), space


def distribution(override: Override) -> BaseDistribution:
    """Hydra's sweep grammar as an Optuna distribution, as Hydra's Optuna sweeper reads it:
    ``choice`` and ``glob`` categorical, ``range`` a stepped int or float, ``interval`` uniform,
    ``tag(log, interval(...))`` log-uniform, ``tag(int, interval(...))`` integer."""
    value = override.value()
    line = override.input_line
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"{line}: an empty range")
        kind = IntDistribution if all(isinstance(v, int) for v in values) else FloatDistribution
        return kind(low=values[0], high=values[-1], step=value.step)
    if isinstance(value, IntervalSweep):
        log, start, end = "log" in value.tags, value.start, value.end
        if not start < end:
            raise ConfigError(f"{line}: an empty or inverted interval ({start} to {end})")
        if log and start <= 0:
            raise ConfigError(f"{line}: a log interval needs bounds > 0 (accepted: 0 < low < high)")
        if "int" in value.tags:
            return IntDistribution(low=math.ceil(start), high=math.floor(end), log=log)
        return FloatDistribution(low=start, high=end, log=log)
    if isinstance(value, ChoiceSweep) or override.is_choice_sweep():
        choices = list(override.sweep_string_iterator())
        if not choices:
            raise ConfigError(f"{line}: an empty choice")
        return CategoricalDistribution(choices)
    raise ConfigError(f"{line}: not a sweep the search understands (choice, range, interval, tag)")


def trial_overrides(fixed: Sequence[str], params: Mapping[str, Any]) -> list[str]:
    return [*fixed, *(f"{key}={value}" for key, value in params.items())]


def corners(space: Mapping[str, BaseDistribution]) -> list[dict[str, Any]]:
    """The parameter settings at the ends of every distribution: all lows, then all highs. Composing
    the config with each checks every bound a trial may take (and that every key exists)."""

    def end(dist: BaseDistribution, last: bool) -> Any:
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[-1 if last else 0]
        return dist.high if last else dist.low

    return [{key: end(dist, last) for key, dist in space.items()} for last in (False, True)]


def check(config: DictConfig, compose_and_validate) -> None:
    """Everything about a search that can be wrong, before any study or run exists: the space, the
    values at its bounds (composed and validated as a job would be), the sampler, the pruner, the
    storage. Raises ``ConfigError`` (one line)."""
    sweeper = config.hydra.sweeper
    fixed, space = search_space(config, OmegaConf.to_container(config.hydra.overrides.task))
    if not space:
        raise ConfigError(
            "a search needs parameters to search: hydra.sweeper.params or a sweep on the command line"
        )
    for corner in corners(space):
        compose_and_validate(trial_overrides(fixed, corner))
    for what in ("sampler", "pruner"):
        build(sweeper.get(what), what)
    if sweeper.direction not in ("maximize", "minimize"):
        raise ConfigError(f"invalid hydra.sweeper.direction={sweeper.direction}: accepted maximize, minimize")
    if sweeper.n_trials < 1 or sweeper.n_jobs < 1:
        raise ConfigError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be integers >= 1")
    check_storage(study_of(config).storage)


def build(settings: DictConfig | None, what: str) -> Any:
    """The sampler or pruner the config describes (``_target_`` and its arguments), or None."""
    if settings is None:
        return None
    try:
        return instantiate(settings)
    except (HydraException, TypeError, ValueError) as error:
        message = str(error).strip().splitlines()[0]
        raise ConfigError(f"cannot build the {what} {settings.get('_target_')!r}: {message}") from None


def check_storage(storage: str) -> None:
    """Whether the study's storage can be opened, without creating anything in it; and that it holds
    no password, which would travel with the sweep's settings into its logs and tags."""
    if store.shown(storage) != storage:
        raise ConfigError(
            f"hydra.sweeper.storage={store.shown(storage)} holds a password: give it as PGPASSWORD "
            "(or in ~/.pgpass) instead, or it would be logged with the search"
        )
    if "://" in storage:
        from sqlalchemy import create_engine
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


# --- The driver ---------------------------------------------------------------------------------------


class Search:
    """The sweeper: asks the study for trials, launches them as jobs, tells it how each ended, and
    records the study in the search's parent run. Hydra reaches it through
    ``hydra_plugins.nnexp_search.SearchSweeper``; its settings are ``hydra.sweeper``'s keys."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Read the settings from ``config.hydra.sweeper`` (where every job reads them too), and build
        the launcher that runs the trials."""
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Any]:
        from nnexp.sweep import SweepHandoff

        handoff = SweepHandoff.load(Path(self.config.hydra.sweep.dir))
        place = study_of(self.config)
        fixed, space = search_space(self.config, arguments)
        settings = self.config.hydra.sweeper
        study = optuna.create_study(
            study_name=place.name,
            storage=place.open(),
            sampler=build(settings.sampler, "sampler"),
            pruner=build(settings.pruner, "pruner"),
            direction=settings.direction,
            load_if_exists=True,
        )
        book = TrialBook(handoff.client(), handoff.parent_run_id)
        book.retry_interrupted(study)
        returns = []
        while (remaining := settings.n_trials - counted(study)) > 0:
            trials = [study.ask(space) for _ in range(min(settings.n_jobs, remaining))]
            jobs = [[*trial_overrides(fixed, trial.params), f"trial={trial.number}"] for trial in trials]
            results = self.launcher.launch(jobs, initial_job_idx=trials[0].number)
            for trial, job in zip(trials, results, strict=True):
                book.tell(study, trial, job)
            returns.append(results)
        book.record(study)
        return returns


def trial_of(study: optuna.Study, number: int) -> optuna.trial.Trial:
    """The running trial ``number`` of ``study``, to report to or annotate from any process: Optuna
    has no public way to reopen a trial by number (its private storage lookup, as checked for 5.0)."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


def counted(study: optuna.Study) -> int:
    """The trials that count towards ``n_trials``: every one that ended, but those a crash interrupted
    (their parameters are tried again)."""
    ended = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return sum(not trial.user_attrs.get(INTERRUPTED) for trial in ended)


class TrialBook:
    """The search's record in MLflow: each trial's run (a child of the search's parent run, found by
    its trial number), the state the study was told, and the study's summary on the parent."""

    def __init__(self, client: MlflowClient, parent_run_id: str):
        self.client, self.parent_run_id = client, parent_run_id

    def run_of(self, number: int) -> Run | None:
        parent = self.client.get_run(self.parent_run_id)
        query = f"tags.`{tags.PARENT}` = '{self.parent_run_id}' and tags.`{tags.TRIAL}` = '{number}'"
        found = self.client.search_runs([parent.info.experiment_id], query)
        return found[0] if found else None

    def retry_interrupted(self, study: optuna.Study) -> None:
        """Fail the trials a crash left RUNNING (and their runs), and ask for their parameters again."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial_of(study, trial.number).set_user_attr(INTERRUPTED, True)
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params)
            run = self.run_of(trial.number)
            if run is not None and run.info.status == RUNNING:
                reason = "interrupted: the search's process died; its parameters are tried again"
                self.client.set_tag(run.info.run_id, tags.FAILURE_REASON, reason)
                self.client.set_tag(run.info.run_id, tags.TRIAL_STATE, TrialState.FAIL.name)
                self.client.set_terminated(run.info.run_id, FAILED)

    def tell(self, study: optuna.Study, trial: optuna.trial.Trial, job: JobReturn) -> None:
        """Tell the study how a trial's job ended: COMPLETE with its objective, PRUNED, or FAIL (the run
        failed, or the job raised before its run could end)."""
        try:
            result: RunResult = job.return_value
        except Exception as error:  # the job's own error: the trial fails, the search goes on
            print(f"trial {trial.number} failed: {str(error).strip().splitlines()[0]}", file=sys.stderr)
            study.tell(trial, state=TrialState.FAIL)
            return
        if result.pruned:
            state = study.tell(trial, state=TrialState.PRUNED).state
        elif result.status == FINISHED and math.isfinite(result.objective):
            state = study.tell(trial, result.objective).state
        else:
            state = study.tell(trial, state=TrialState.FAIL).state
        self.client.set_tag(result.run_id, tags.TRIAL_STATE, state.name)

    def record(self, study: optuna.Study) -> None:
        """The study on its parent run: the best trial's validation accuracy and parameters, trials.csv,
        and pictures (optimisation history, parameter importances, the trials' validation curves)."""
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            best = study.best_trial
            metrics = {OBJECTIVE: best.value, BEST_TRIAL: best.number}
            self.client.log_batch(
                self.parent_run_id,
                metrics=[
                    Metric(k, float(v), int(time.time() * 1000), len(trials)) for k, v in metrics.items()
                ],
                tags=[RunTag(f"{tags.BEST_PARAM}{key}", str(value)) for key, value in best.params.items()],
            )
        with tempfile.TemporaryDirectory() as tmp:
            for path in study_files(study, Path(tmp), self.runs_by_trial()):
                self.client.log_artifact(self.parent_run_id, str(path))

    def runs_by_trial(self) -> dict[int, str]:
        parent = self.client.get_run(self.parent_run_id)
        runs = self.client.search_runs(
            [parent.info.experiment_id], f"tags.`{tags.PARENT}` = '{self.parent_run_id}'"
        )
        return {
            int(run.data.tags[tags.TRIAL]): run.info.run_id for run in runs if tags.TRIAL in run.data.tags
        }


def study_files(study: optuna.Study, out: Path, runs: Mapping[int, str]) -> list[Path]:
    """trials.csv and the study's pictures, written into ``out``."""
    trials = study.get_trials(deepcopy=False)
    table = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration"))
    table["epochs"] = [len(t.intermediate_values) for t in trials]
    table["run_id"] = [runs.get(t.number, "") for t in trials]
    table.to_csv(out / "trials.csv", index=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial.number if complete else None
    curves = {t.number: (t.state.name, dict(t.intermediate_values)) for t in trials}
    paths = [out / "trials.csv", plot_trials(curves, best, out / "trial_curves.png", study.study_name)]
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    pictures = {"optimization_history.png": optuna_plots.plot_optimization_history}
    if len(complete) >= 2:
        pictures["param_importances.png"] = optuna_plots.plot_param_importances
    if len(complete) >= 2 and len(study.best_trial.params) >= 2:
        pictures["contour.png"] = optuna_plots.plot_contour
    # Optuna's plots set a global style: keep it theirs (rc_context), and quiet (they are "experimental").
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")
        for name, plot in pictures.items():
            axes = plot(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.savefig(out / name, dpi=120, bbox_inches="tight")
            plt.close(figure)
            paths.append(out / name)
    return paths


# --- A trial's job -------------------------------------------------------------------------------------


class TrialReporter:
    """A job's side of its trial: reopened from the study's storage by study name and trial number
    (the driver asked for it in another process), it reports the validation accuracy after every
    epoch and says when the pruner would stop the trial. The pruner lives only in memory, so each
    job builds the same one from ``hydra.sweeper.pruner``."""

    def __init__(self, place: StudyPlace, pruner: DictConfig | None, number: int):
        study = optuna.load_study(study_name=place.name, storage=place.open(), pruner=build(pruner, "pruner"))
        self.trial = trial_of(study, number)

    def should_prune(self, metrics: Mapping[str, float]) -> bool:
        """Report this epoch's validation accuracy; whether the trial should stop here."""
        self.trial.report(metrics[key("validation", "accuracy")], int(metrics[EPOCH]))
        return self.trial.should_prune()
