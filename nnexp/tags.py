"""The names of the MLflow tags nnexp writes and reads: how runs are found, nested and labelled.

Every module that sets or reads one of these tags imports its name from here. (The names of the
metrics themselves belong to the engine: ``nnexp.engine.history``.)
"""

OVERRIDES = "nnexp.overrides"  # the command-line overrides that made the run what it is
SWEEP = "nnexp.sweep"  # "true" on a sweep's parent run
SWEEP_ID = "nnexp.sweep_id"  # on a job's run: its sweep's parent run id ("" for a run on its own)
JOB = "nnexp.job"  # the job's number in its sweep (0 for a run on its own)
SEED = "nnexp.seed"
GIT_COMMIT = "nnexp.git_commit"  # the commit of the code that ran, with "-dirty" for local changes
FAILURE_REASON = "failure_reason"  # why a run ended FAILED or KILLED

PARENT = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under its parent by it
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3's UI shows the classic runs table for ...
CLASSIC_ML = "custom_model_development"  # ... experiments of this kind
