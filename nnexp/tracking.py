"""MLflow logging of runs: the store rules, one run's lifecycle, its metrics and artifacts.

Everything goes through an explicit ``MlflowClient`` and run ids, never MLflow's fluent API and its
process-wide "active run": the joblib launcher reuses worker processes for several jobs, so nothing may
carry over from one job to the next. The engine never imports this module; it reports each epoch to a
callback, and ``TrackedRun.log_epoch`` is that callback.

    python -m nnexp.tracking url [EXPERIMENT]   # print the runs-table URL of the store in this directory
    python -m nnexp.tracking ui [EXPERIMENT]    # the same, then serve that store with `mlflow ui`
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from nnexp.plots import plot_learning_curves
from nnexp.training import SPLITS, DivergenceError

HOST, PORT = "127.0.0.1", 5000  # where `mlflow ui` serves the store (`python -m nnexp.tracking ui`)
UI = f"http://{HOST}:{PORT}"
BATCH = 100  # MLflow's limit of params per log_batch call
REASON_CHARS = 1000  # a failure_reason is an exception's message: keep it well inside MLflow's tag limit
CURVES = tuple(f"{split}_{measure}" for split in SPLITS for measure in ("cost", "accuracy"))
FINISHED, FAILED, KILLED = (
    RunStatus.to_string(status) for status in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)
)
# The tags a run is found and labelled by: written here, read by the sweep callback and the report.
OVERRIDES_TAG, SWEEP_TAG, SEED_TAG, JOB_TAG = "nnexp.overrides", "nnexp.sweep", "nnexp.seed", "nnexp.job"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under its parent by it
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # MLflow 3's UI: classic ML view

# MLflow draws a progress bar for every artifact it copies; in a run's output, one per run is noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def store_uri(start_dir: Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI if set, else ``mlflow.db`` in the directory the command was started in."""
    start = Path(start_dir) if start_dir is not None else Path.cwd()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{start.resolve() / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """``mlartifacts/`` beside a sqlite store, as an absolute file URI, so that ``mlflow ui`` started in
    any directory serves the artifacts. Other stores (a tracking server) keep their own default."""
    if urlparse(uri).scheme != "sqlite":
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()


def open_store(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client of the store and the id of ``experiment``, created (with its artifact location) if new.

    The first call on a fresh sqlite store also creates its schema: for a sweep, call this once in the
    launching process, because parallel jobs racing to set up one sqlite file fail.
    """
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return client, found.experiment_id
    experiment_id = client.create_experiment(
        experiment, artifact_location=artifact_location(uri), tags=EXPERIMENT_KIND
    )
    return client, experiment_id


def runs_url(experiment_id: str) -> str:
    """The UI page of the experiment's runs table (MLflow 3 otherwise opens its GenAI view)."""
    return f"{UI}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def git_commit() -> str:
    """The commit of the code that ran, with "-dirty" when the work tree had changes; "" outside git."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def flatten(tree: Mapping, prefix: str = "") -> dict[str, str]:
    """A nested config as dot keys ("train.eta"), the form MLflow params take; lists stay one value."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = "null" if value is None else str(value)
    return flat


def summary(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The end-of-run metrics: peaks over epochs (as the book reports), the last epoch's values."""
    frame = pd.DataFrame(history)
    result = {"epochs_run": len(frame)}
    if frame.empty:
        return result
    best = frame["validation_accuracy"].idxmax()
    result.update(
        best_validation_accuracy=frame["validation_accuracy"].max(),
        best_test_accuracy=frame["test_accuracy"].max(),
        best_epoch=frame["epoch"][best],
    )
    result.update({f"final_{key}": frame[key].iloc[-1] for key in CURVES})
    return {key: float(value) for key, value in result.items()}


class TrackedRun:
    """One MLflow run seen through its id: params, per-epoch metrics, summary, artifacts, end status.

    It keeps the epochs it logged, so a run that stops early (divergence) still gets its summary.
    """

    def __init__(self, client: MlflowClient, experiment_id: str, run_id: str, name: str):
        self.client, self.experiment_id, self.run_id, self.name = client, experiment_id, run_id, name
        self.history: list[dict[str, float]] = []
        self.failure: str | None = None  # the failure_reason, once the run has ended with one
        self.started = time.perf_counter()

    @classmethod
    def create(
        cls,
        client: MlflowClient,
        experiment_id: str,
        name: str,
        tags: Mapping[str, str],
        params: Mapping[str, str],
    ) -> TrackedRun:
        run = client.create_run(experiment_id, run_name=name, tags=dict(tags))
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), BATCH):
            client.log_batch(run.info.run_id, params=items[start : start + BATCH], synchronous=True)
        return cls(client, experiment_id, run.info.run_id, name)

    def log_epoch(self, metrics: Mapping[str, float]) -> None:
        """All of one epoch's metrics at step=epoch, in one request."""
        self.history.append(dict(metrics))
        values = {key: value for key, value in metrics.items() if key != "epoch"}
        self._log_metrics(values, int(metrics["epoch"]))

    def log_summary(self) -> None:
        self._log_metrics({**summary(self.history), "wall_seconds": time.perf_counter() - self.started}, 0)

    def log_outputs(self, net, out_dir: Path, config_yaml: str, hydra_dir: Path | None) -> None:
        """The resolved config, Hydra's own record of the job, metrics.csv, the learning curves, the
        weights (``Network.load``-able) and a pyfunc model; each file is also kept in ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(config_yaml)
        history = pd.DataFrame(self.history)
        history.to_csv(out_dir / "metrics.csv", index=False)
        plot_learning_curves({self.name: history}, out_dir / "learning_curves.png", self.name)
        net.save(out_dir / "network.npz")
        for name in ("config.yaml", "metrics.csv", "learning_curves.png", "network.npz"):
            self.client.log_artifact(self.run_id, str(out_dir / name))
        if hydra_dir is not None and hydra_dir.is_dir():
            self.client.log_artifacts(self.run_id, str(hydra_dir), ".hydra")
        self._log_model(out_dir / "network.npz")

    def _log_model(self, weights: Path) -> None:
        """A pyfunc model under "model": ``mlflow.pyfunc.load_model(f"runs:/{id}/model").predict(images)``
        returns digits. Requirements are given, not inferred: inference imports and probes the whole
        environment, which would cost more than a short training run."""
        import mlflow.pyfunc  # lazy: only the end of a run needs it, and it is slow to import

        package = Path(__file__).parent
        with tempfile.TemporaryDirectory() as tmp, _quiet("mlflow.pyfunc"):
            path = Path(tmp) / "model"
            # No signature on purpose: MLflow would then reject float64 or integer images outright.
            mlflow.pyfunc.save_model(
                path=str(path),
                python_model=str(package / "pyfunc_model.py"),
                artifacts={"network": str(weights)},
                code_paths=[str(package)],
                pip_requirements=[f"numpy=={np.__version__}", f"pandas=={pd.__version__}"],
            )
            self.client.log_artifacts(self.run_id, str(path), "model")

    def end(self, status: str, reason: str | None = None) -> None:
        if reason is not None:
            self.failure = reason[:REASON_CHARS]
            self.client.set_tag(self.run_id, "failure_reason", self.failure, synchronous=True)
        self.client.set_terminated(self.run_id, status)

    def _log_metrics(self, values: Mapping[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        metrics = [Metric(key, float(value), stamp, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a logger's warnings for a moment (MLflow warns on every model saved without a signature)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def ending(run: TrackedRun) -> Iterator[TrackedRun]:
    """End ``run`` however its body ends, so no run is ever left RUNNING.

    Divergence is a result, not a crash: the run ends FAILED with a failure_reason and the epochs it had,
    and the exception is swallowed so a sweep goes on. Ctrl-C ends it KILLED, anything else FAILED; both
    are re-raised.
    """
    try:
        yield run
    except DivergenceError as error:
        run.log_summary()
        run.end(FAILED, reason=f"diverged: {error}")
    except KeyboardInterrupt:
        run.end(KILLED, reason="interrupted")
        raise
    except BaseException as error:
        run.end(FAILED, reason=f"{type(error).__name__}: {error}")
        raise
    else:
        run.end(FINISHED)


def main(argv: Sequence[str] | None = None) -> int:
    """``url [EXPERIMENT]`` prints the runs-table URL of this directory's store; ``ui [EXPERIMENT]`` also
    starts the MLflow UI on it, bound to 127.0.0.1. Printing the URL never creates a store."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("url", "ui") or len(args) > 2:
        print("usage: python -m nnexp.tracking {url,ui} [EXPERIMENT]", file=sys.stderr)
        return 2
    uri, name = store_uri(), (args[1] if len(args) == 2 else "nnexp")
    missing = urlparse(uri).scheme == "sqlite" and not Path(uri.removeprefix("sqlite:///")).exists()
    experiment = None if missing else MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    print(runs_url(experiment.experiment_id) if experiment is not None else f"{UI}/#/experiments", flush=True)
    if args[0] == "ui":
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "mlflow",
                "ui",
                "--backend-store-uri",
                uri,
                "--host",
                HOST,
                "--port",
                str(PORT),
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
