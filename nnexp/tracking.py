"""MLflow logging of one run: its lifecycle, params, per-epoch metrics, summary and artifacts.

Everything goes through an explicit ``MlflowClient`` and run ids, never MLflow's fluent API and its
process-wide "active run": the joblib launcher reuses worker processes for several jobs, so nothing may
carry over from one job to the next. The engine never imports this module; it reports each epoch to a
callback, and ``TrackedRun.log_epoch`` is that callback.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.entities import DatasetInput, Metric, Param, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from nnexp import lineage, process, runs
from nnexp.engine import DivergenceError, Network, summarize
from nnexp.engine.history import EPOCH, EPOCH_SECONDS, ETA, INITIAL, OBJECTIVE, Metrics, learning_speed
from nnexp.grammar import RESUME
from nnexp.plots import plot_learning_curves
from nnexp.vocabulary import Status, Summary, Tag

BATCH = 100  # MLflow's limit of params per log_batch call
REASON_CHARS = 1000  # a failure_reason is an exception's message: keep it well inside MLflow's tag limit


def flatten(tree: Mapping, prefix: str = "") -> dict[str, str]:
    """A nested config as dot keys ("train.eta"), the form MLflow params take; lists stay one value."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _text(value)
    return flat


def _text(value: object) -> str:
    """A param's value: a list as Python shows it ("[100, 30]"), but each mapping in it (a conv-pool
    layer) as an override writes it, "{filters:20,kernel:5,pool:2}", not as a Python dict."""
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{_text(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_text(item) for item in value) + "]"
    return str(value)


def run_params(cfg: DictConfig) -> dict[str, str]:
    """The params a run logs: its whole resolved config, flattened, but how it was started (``resume``,
    a search's ``trial``: the tags record those), which is not what it is."""
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    for launch in (RESUME, "trial"):
        params.pop(launch, None)
    return params


@dataclass(frozen=True)
class RunResult:
    """What a run gives back to whoever launched it: ``main``'s return value, which a sweeper reads.

    ``objective`` is what a search maximises: the best validation accuracy, never a test figure (the
    book keeps test data out of every choice). NaN when the run ended before its first epoch.
    """

    run_id: str
    status: str
    history: Sequence[Metrics]
    pruned: bool = False  # a search's pruner stopped the run before train.epochs

    @classmethod
    def of(cls, client: MlflowClient, run: Run) -> RunResult:
        """The result of a run that ended before, read back from the store."""
        return cls(run.info.run_id, run.info.status, tuple(runs.stored_history(client, run.info.run_id)))

    @property
    def summary(self) -> Metrics:
        return summarize(self.history)

    @property
    def objective(self) -> float:
        return self.summary.get(OBJECTIVE, math.nan)


class TrackedRun:
    """One MLflow run seen through its id: params, per-epoch metrics, summary, artifacts, end status.

    It keeps the epochs of the run, so a run that stops early (divergence) still gets its summary.
    """

    def __init__(
        self, client: MlflowClient, experiment_id: str, run_id: str, name: str, seconds: float = 0.0
    ):
        self.client, self.experiment_id, self.run_id, self.name = client, experiment_id, run_id, name
        self.history: list[Metrics] = []
        self.failure: str | None = None  # the failure_reason, once the run has ended with one
        self.status: str | None = None  # once the run has ended
        self.started = time.perf_counter() - seconds  # seconds: spent on the run before this process

    @classmethod
    def create(
        cls,
        client: MlflowClient,
        experiment_id: str,
        name: str,
        run_tags: Mapping[str, str],
        params: Mapping[str, str],
        data: DatasetInput,
    ) -> TrackedRun:
        """A new run with its tags, params and input data; a run that cannot be given them ends FAILED
        rather than staying RUNNING."""
        run = client.create_run(experiment_id, run_name=name, tags={**run_tags, **runs.process_tags()})
        tracked = cls(client, experiment_id, run.info.run_id, name)
        with ending(tracked, finish=False):
            items = [Param(key, value) for key, value in params.items()]
            for start in range(0, len(items), BATCH):
                client.log_batch(run.info.run_id, params=items[start : start + BATCH], synchronous=True)
            try:
                client.log_inputs(run.info.run_id, datasets=[data])
            except MlflowException:  # parallel jobs racing to add the same dataset to a sqlite store:
                client.log_inputs(run.info.run_id, datasets=[data])  # the loser finds it there now
        return tracked

    @classmethod
    def reopen(cls, client: MlflowClient, run: Run, history: Sequence[Metrics], epochs: int) -> TrackedRun:
        """Take up an existing run in this process: RUNNING again, its failure reason gone, training to
        ``epochs``, with the epochs of ``history`` (its checkpoint's) that its last process did not
        get to log now logged. Its wall time goes on from the seconds those epochs took."""
        run_id = run.info.run_id
        runs.take_up(client, run_id)
        if Tag.FAILURE_REASON in run.data.tags:
            client.delete_tag(run_id, Tag.FAILURE_REASON)
        client.set_tag(run_id, Tag.TRAIN_EPOCHS, str(epochs), synchronous=True)
        logged = {metric.step for metric in client.get_metric_history(run_id, ETA)}
        if history and history[0][EPOCH] == INITIAL:  # epoch 0 (learning speeds) has no eta
            logged |= {metric.step for metric in client.get_metric_history(run_id, learning_speed(1))}
        seconds = sum(metrics.get(EPOCH_SECONDS, 0.0) for metrics in history)
        tracked = cls(client, run.info.experiment_id, run_id, run.info.run_name, seconds)
        for metrics in history:
            if metrics[EPOCH] in logged:
                tracked.history.append(dict(metrics))
            else:
                tracked.log_epoch(metrics)
        return tracked

    def log_epoch(self, metrics: Mapping[str, float]) -> None:
        """All of one epoch's metrics at step=epoch, in one request (about 6 ms on a local store:
        MLflow's asynchronous logging would save 5 of them an epoch, and cost a second to flush)."""
        self.history.append(dict(metrics))
        values = {key: value for key, value in metrics.items() if key != EPOCH}
        self._log_metrics(values, int(metrics[EPOCH]))

    def log_summary(self) -> None:
        """The summary of the whole run, at the step of its last epoch (a run trained further later
        logs its new summary at a later step)."""
        summary = {**summarize(self.history), Summary.WALL_SECONDS: time.perf_counter() - self.started}
        self._log_metrics(summary, self.epochs)

    def log_outputs(self, net: Network, config_yaml: str, hydra_dir: Path | None) -> None:
        """The resolved config, Hydra's own record of the job (``hydra_dir``), metrics.csv, the learning
        curves, the weights (``Network.load``-able), and the network as a logged model of the run.

        They are written in a scratch directory and kept in the store only: the job's output directory
        keeps Hydra's record alone, and with a tracking server nothing else of the run stays on this
        machine."""
        with tempfile.TemporaryDirectory(prefix="nnexp-outputs-") as scratch:
            out_dir = Path(scratch)
            (out_dir / "config.yaml").write_text(config_yaml)
            history = pd.DataFrame(self.history)
            history.to_csv(out_dir / "metrics.csv", index=False)
            plot_learning_curves({self.name: history}, out_dir / "learning_curves.png", self.name)
            net.save(out_dir / "network.npz")
            for name in ("config.yaml", "metrics.csv", "learning_curves.png", "network.npz"):
                self.client.log_artifact(self.run_id, str(out_dir / name))
            if hydra_dir is not None and hydra_dir.is_dir():
                self.client.log_artifacts(self.run_id, str(hydra_dir), ".hydra")
            lineage.log_model(
                self.client, self.experiment_id, self.run_id, net, out_dir / "network.npz", self.epochs
            )

    @property
    def epochs(self) -> int:
        """The last epoch trained (0 before the first; epoch 0's learning speeds train nothing)."""
        return int(self.history[-1][EPOCH]) if self.history else 0

    def end(self, status: str, reason: str | None = None) -> None:
        if reason is not None:
            self.failure = reason[:REASON_CHARS]
            self.client.set_tag(self.run_id, Tag.FAILURE_REASON, self.failure, synchronous=True)
        self.client.set_terminated(self.run_id, status)
        self.status = status

    def result(self, pruned: bool = False) -> RunResult:
        return RunResult(self.run_id, self.status, tuple(self.history), pruned)

    def _log_metrics(self, values: Mapping[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        metrics = [Metric(key, float(value), stamp, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)


@contextlib.contextmanager
def ending(run: TrackedRun, finish: bool = True) -> Iterator[TrackedRun]:
    """End ``run`` however its body ends, so no run is ever left RUNNING (and FINISHED when the body
    completes, unless ``finish`` is False: the run goes on after it).

    Divergence is a result, not a crash: the run ends FAILED with a failure_reason and the epochs it had,
    and the exception is swallowed so a sweep goes on. Ctrl-C (or SIGTERM: ``process.stop_on_sigterm``)
    and an exit asked for by a signal handler (submitit's, when a scheduler preempts the job) end it
    KILLED, anything else FAILED; all are re-raised.
    """
    try:
        yield run
    except DivergenceError as error:
        run.log_summary()
        run.end(Status.FAILED, reason=f"diverged: {error}")
    except KeyboardInterrupt:
        run.end(Status.KILLED, reason=process.interruption())
        raise
    except SystemExit as stop:  # submitit's answer to a preemption or time-out: checkpointed, requeued
        run.end(
            Status.KILLED, reason=f"stopped (exit status {stop.code}): preempted, timed out or told to exit"
        )
        raise
    except BaseException as error:
        run.end(Status.FAILED, reason=f"{type(error).__name__}: {error}")
        raise
    else:
        if finish:
            run.end(Status.FINISHED)
