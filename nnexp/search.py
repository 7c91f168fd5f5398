"""Hyper-parameter search: an Optuna study run as a Hydra sweep, every trial a run in MLflow.

    python -m nnexp.run -m search=ch3_eta_lmbda                       # a preset of conf/search/
    python -m nnexp.run -m search=ch3_eta_lmbda hydra.sweeper.n_trials=40 'activation=choice(sigmoid,tanh)'

Chapter 3 of the book chooses eta, lmbda and the rest by hand ("a broad strategy") and names the
automated alternatives; this is one. ``Search`` is a Hydra sweeper (its door and its typed settings in
``hydra_plugins/nnexp_search``) that drives Optuna through its ask/tell interface: it asks the study for
``n_jobs`` trials, launches them as jobs through the configured launcher (basic, joblib, submitit), and
tells the study how each ended. A job reopens its own trial from the study's storage
(``TrialReporter``), reports its validation accuracy after every epoch and stops as soon as the pruner
says so. The objective is the best validation accuracy: test data never enters the search.

The study lives in a journal file beside the MLflow store (``optuna.journal``), or in the database
``hydra.sweeper.storage`` names (``nnexp.study``). Running the same command again continues the same
study: ``n_trials`` is the study's total, and trials a crash left RUNNING are failed and tried again.

This module imports Optuna: only the search's door and a trial's job import it, when a search runs.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from mlflow.entities import Metric, Run, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from nnexp import runs
from nnexp.adapters.optuna_trial import trial_of
from nnexp.engine.history import EPOCH, OBJECTIVE, key
from nnexp.errors import ConfigError
from nnexp.grammar import Overrides
from nnexp.handoff import SweepHandoff
from nnexp.plots import plot_trials
from nnexp.study import StudyPlace, check_storage, study_of
from nnexp.tracking import RunResult
from nnexp.vocabulary import Status, Summary, Tag

INTERRUPTED = "interrupted"  # a trial's user attribute: failed because a crash left it RUNNING


def quiet_optuna() -> None:
    """Optuna's INFO line for every trial is noise beside the runs' own lines."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- The search space -------------------------------------------------------------------------------


def search_space(
    config: DictConfig, arguments: Sequence[str] | None = None
) -> tuple[list[str], dict[str, BaseDistribution]]:
    """(the fixed overrides of every trial, the parameters to search and their distributions), from the
    sweep of ``config`` (``arguments``: the command line, by default the command's own).

    Raises ``ConfigError`` for an empty or inverted interval, or log on a non-positive bound.
    """
    overrides = Overrides.of_sweep(config, arguments)
    return overrides.fixed, {key: distribution(override) for key, override in overrides.swept.items()}


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


def check(config: DictConfig, compose_and_validate: Callable[[list[str]], None]) -> None:
    """Everything about a search that its types cannot say, before any study or run exists: the space,
    the values at its bounds (composed and validated as a job would be), the sampler, the pruner, the
    storage. (``hydra_plugins.nnexp_search.config`` types the settings themselves.) Raises
    ``ConfigError`` (one line)."""
    sweeper = config.hydra.sweeper
    fixed, space = search_space(config)
    if not space:
        raise ConfigError(
            "a search needs parameters to search: hydra.sweeper.params or a sweep on the command line"
        )
    for corner in corners(space):
        compose_and_validate(trial_overrides(fixed, corner))
    for what in ("sampler", "pruner"):
        build(sweeper.get(what), what)
    for name in ("n_trials", "n_jobs"):
        if sweeper[name] < 1:
            raise ConfigError(f"invalid hydra.sweeper.{name}={sweeper[name]}: accepted an integer >= 1")
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
        quiet_optuna()
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Any]:
        handoff = SweepHandoff.load(Path(self.config.hydra.sweep.dir))
        place = study_of(self.config)
        fixed, space = search_space(self.config, arguments)
        settings = self.config.hydra.sweeper
        study = optuna.create_study(
            study_name=place.name,
            storage=place.open(),
            sampler=build(settings.sampler, "sampler"),
            pruner=build(settings.pruner, "pruner"),
            direction=settings.direction.name,
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
        found = runs.find(
            self.client, [parent.info.experiment_id], {Tag.PARENT: self.parent_run_id, Tag.TRIAL: str(number)}
        )
        return found[0] if found else None

    def retry_interrupted(self, study: optuna.Study) -> None:
        """Fail the trials a crash left RUNNING (and their runs), and ask for their parameters again."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial_of(study, trial.number).set_user_attr(INTERRUPTED, True)
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params)
            run = self.run_of(trial.number)
            if run is not None and run.info.status == Status.RUNNING:
                reason = "interrupted: the search's process died; its parameters are tried again"
                self.client.set_tag(run.info.run_id, Tag.FAILURE_REASON, reason)
                self.client.set_tag(run.info.run_id, Tag.TRIAL_STATE, TrialState.FAIL.name)
                self.client.set_terminated(run.info.run_id, Status.FAILED)

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
        elif result.status == Status.FINISHED and math.isfinite(result.objective):
            state = study.tell(trial, result.objective).state
        else:
            state = study.tell(trial, state=TrialState.FAIL).state
        if result.run_id:  # a job that could not run has no run
            self.client.set_tag(result.run_id, Tag.TRIAL_STATE, state.name)

    def record(self, study: optuna.Study) -> None:
        """The study on its parent run: the best trial's validation accuracy and parameters, trials.csv,
        and pictures (optimisation history, parameter importances, the trials' validation curves)."""
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            best = study.best_trial
            metrics = {OBJECTIVE: best.value, Summary.BEST_TRIAL: best.number}
            self.client.log_batch(
                self.parent_run_id,
                metrics=[
                    Metric(k, float(v), int(time.time() * 1000), len(trials)) for k, v in metrics.items()
                ],
                tags=[RunTag(f"{Tag.BEST_PARAM}{key}", str(value)) for key, value in best.params.items()],
            )
        with tempfile.TemporaryDirectory() as tmp:
            for path in study_files(study, Path(tmp), self.runs_by_trial()):
                self.client.log_artifact(self.parent_run_id, str(path))

    def runs_by_trial(self) -> dict[int, str]:
        children = runs.children(self.client, self.client.get_run(self.parent_run_id))
        return {
            int(run.data.tags[Tag.TRIAL]): run.info.run_id for run in children if Tag.TRIAL in run.data.tags
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
    # pyplot (a second to import) and Optuna's plots: the driver draws the study, a trial's job never does
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
        quiet_optuna()
        study = optuna.load_study(study_name=place.name, storage=place.open(), pruner=build(pruner, "pruner"))
        self.trial = trial_of(study, number)

    def should_prune(self, metrics: Mapping[str, float]) -> bool:
        """Report this epoch's validation accuracy; whether the trial should stop here."""
        self.trial.report(metrics[key("validation", "accuracy")], int(metrics[EPOCH]))
        return self.trial.should_prune()
