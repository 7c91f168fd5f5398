"""The names of the MLflow tags nnexp writes and reads: how runs are found, nested and labelled.

Every module that sets or reads one of these tags imports its name from here. (The names of the
metrics themselves belong to the engine: ``nnexp.engine.history``.)
"""

import shlex
from collections.abc import Sequence

OVERRIDES = "nnexp.overrides"  # the command-line overrides that made the run what it is
SWEEP = "nnexp.sweep"  # "true" on a sweep's parent run
SWEEP_ID = "nnexp.sweep_id"  # on a job's run: its sweep's parent run id ("" for a run on its own)
JOB = "nnexp.job"  # the job's number in its sweep (0 for a run on its own)
SEED = "nnexp.seed"
SOURCE_NAME, SOURCE_TYPE = "mlflow.source.name", "mlflow.source.type"  # MLflow's own: the UI's Source
GIT_COMMIT = "mlflow.source.git.commit"  # ... and the commit of the code that ran
GIT_DIRTY = "nnexp.git_dirty"  # "true" when the work tree had uncommitted changes
FAILURE_REASON = "failure_reason"  # why a run ended FAILED or KILLED
TRAIN_EPOCHS = "nnexp.train_epochs"  # the epochs the run trains to (a resume may raise train.epochs)
HOST, PID = "nnexp.host", "nnexp.pid"  # the process writing the run: a resume must not write it too
HYDRA_OVERRIDES = "nnexp.hydra_overrides"  # on a sweep's parent: its launcher settings, for a resume
SEARCH = "nnexp.search"  # on a search's parent run: the study's name
TRIAL = "nnexp.trial"  # on a search's run: its trial number
TRIAL_STATE = "nnexp.trial_state"  # ... and how the study was told it ended: COMPLETE, PRUNED or FAIL
BEST_PARAM = "nnexp.best."  # on a search's parent run, before a parameter's key: its best value

PARENT = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under its parent by it
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3's UI shows the classic runs table for ...
CLASSIC_ML = "custom_model_development"  # ... experiments of this kind


def join_overrides(overrides: Sequence[str]) -> str:
    """The value of an ``OVERRIDES`` tag: readable, and quoted where an override holds a space."""
    return shlex.join(overrides)


def split_overrides(value: str) -> list[str]:
    """The overrides an ``OVERRIDES`` tag holds."""
    return shlex.split(value)
