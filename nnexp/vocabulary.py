"""The words nnexp writes into MLflow and reads back: tag names, run statuses, trial states, and the
metrics of a sweep or search (the metrics of a run belong to the engine: ``nnexp.engine.history``).

Every module that sets or reads one of these imports it from here, so a name is spelled once. The
module imports nothing: any layer of the harness may use it.
"""


class Tag:
    """The names of the MLflow tags nnexp writes: how runs are found, nested and labelled."""

    OVERRIDES = "nnexp.overrides"  # the command-line overrides that made the run what it is
    SWEEP = "nnexp.sweep"  # "true" on a sweep's parent run
    SWEEP_ID = "nnexp.sweep_id"  # on a job's run: its sweep's parent run id ("" for a run on its own)
    JOB = "nnexp.job"  # the job's number in its sweep (0 for a run on its own)
    SEED = "nnexp.seed"
    SOURCE_NAME, SOURCE_TYPE = "mlflow.source.name", "mlflow.source.type"  # MLflow's own: the Source
    GIT_COMMIT = "mlflow.source.git.commit"  # ... and the commit of the code that ran
    GIT_DIRTY = "nnexp.git_dirty"  # "true" when the work tree had uncommitted changes
    FAILURE_REASON = "failure_reason"  # why a run ended FAILED or KILLED
    TRAIN_EPOCHS = "nnexp.train_epochs"  # the epochs the run trains to (a resume may raise train.epochs)
    HOST, PID = "nnexp.host", "nnexp.pid"  # the process writing the run: a resume must not write it too
    HYDRA_OVERRIDES = "nnexp.hydra_overrides"  # on a sweep's parent: its launcher settings, for a resume
    FAILED_JOB = "nnexp.failed_job."  # on a sweep's parent, before a job's number: why it could not run
    SEARCH = "nnexp.search"  # on a search's parent run: the study's name
    TRIAL = "nnexp.trial"  # on a search's run: its trial number
    TRIAL_STATE = "nnexp.trial_state"  # ... and how the study was told it ended (a ``Trial`` state)
    BEST_PARAM = "nnexp.best."  # on a search's parent run, before a parameter's key: its best value
    PARENT = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under its parent by it
    EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3's UI shows the classic runs table for ...
    CLASSIC_ML = "custom_model_development"  # ... experiments of this kind (a value, not a name)


class Status:
    """MLflow's run statuses, as its client spells them (``RunStatus.to_string``)."""

    RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"


class Trial:
    """How a search's study was told a trial ended (Optuna's ``TrialState`` names, without Optuna)."""

    COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"


class Summary:
    """The summary metrics nnexp adds to the engine's (``nnexp.engine.history.summarize``): a run's wall
    time, on a search's parent run its best trial, on a sweep's parent the vote of its networks."""

    WALL_SECONDS = "wall_seconds"
    BEST_TRIAL = "best_trial"
    ENSEMBLE_TEST_ACCURACY = "ensemble_test_accuracy"  # on a sweep's parent: its networks' vote (chapter 6)
    ENSEMBLE_VOTERS = "ensemble_voters"  # ... and how many networks voted
    ENSEMBLE_TEST_ERRORS = "ensemble_test_errors"  # ... and how many test images it got wrong (the book's 33)
