"""What the harness costs on top of the engine, measured the way a user meets it.

    python benchmarks/bench_harness.py            # all the numbers, about 3 minutes on 2 cores

1. start-up: from the command to the start of the first epoch (imports, Hydra, data, store, run);
2. tracking overhead per epoch: the harness's epoch-to-epoch interval against ``sgd`` alone (target <= 15%);
3. a default 30-epoch run, command to exit (target <= 15 s);
4. a 4-run sweep with the joblib launcher (n_jobs=2) against the basic one (target >= 1.4x faster);
5. a checkpoint of [784,100,10] against one of its epochs at mini-batch 10 (target <= 5%);
6. a search's own cost per trial, beyond the runs themselves (target <= 0.3 s);
7. a tracking server's throughput on PostgreSQL: epochs logged a second by 8 jobs at once.

The default run is timed twice in one temporary directory: first on a fresh store (a user's first run,
which also creates the sqlite schema), then on the existing one. The engine-alone figure is measured in
this process with the same data and seed.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from nnexp import checkpoints, store
from nnexp.engine import Network, data, sgd
from nnexp.engine.history import CURVES, EPOCH_SECONDS, ETA
from nnexp.engine.training import TrainingState

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def timed_command(cwd: str, *args: str) -> tuple[float, list[tuple[float, str]]]:
    """Run ``python -m nnexp.run *args`` in ``cwd``: (seconds to exit, [(seconds, stdout line)])."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "nnexp.run", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    lines = [(time.perf_counter() - started, line) for line in process.stdout]
    if process.wait() != 0:
        raise SystemExit(f"nnexp.run {' '.join(args)} failed")
    return time.perf_counter() - started, lines


def report_run(what: str, total: float, lines: list[tuple[float, str]], engine: float) -> None:
    epochs = [(t, line) for t, line in lines if " | epoch " in line]
    first_epoch = float(epochs[0][1].rsplit("(", 1)[1].rstrip("s)\n"))  # the "(0.3s)" at the line's end
    interval = statistics.median(b - a for (a, _), (b, _) in itertools.pairwise(epochs))
    print(f"{what}:")
    print(f"  start-up to first epoch:     {epochs[0][0] - first_epoch:5.2f} s")
    print(
        f"  epoch, harness vs engine:    {interval:5.3f} s vs {engine:5.3f} s "
        f"({(interval / engine - 1):+.1%} tracking overhead, median over epochs)"
    )
    print(
        f"  command to exit:             {total:5.2f} s "
        f"(of which {total - epochs[-1][0]:.2f} s after training)"
    )


def engine_epochs(epochs: int = 30) -> list[float]:
    """Epoch times of the default network trained by ``sgd`` alone, no harness."""
    dataset = data.load("mnist")
    net = Network([784, 30, 10], regularizer="l2", lmbda=5.0, seed=0)
    return [m["epoch_seconds"] for m in sgd(net, dataset, epochs, 10, 0.5)]


def checkpoint_cost(saves: int = 20) -> None:
    """One checkpoint of [784,100,10] with momentum (weights, velocities, generator, history) logged to a
    sqlite store's artifacts, against one epoch of that net at mini-batch 10 (target <= 5%)."""
    dataset = data.load("mnist")
    net = Network([784, 100, 10], regularizer="l2", lmbda=5.0, seed=0)
    state = TrainingState()
    epoch = sgd(net, dataset, 1, 10, 0.5, momentum=0.5, state=state)[0]["epoch_seconds"]
    with tempfile.TemporaryDirectory() as tmp:
        client, experiment_id = store.open_experiment(f"sqlite:///{tmp}/mlflow.db", "bench")
        checkpointer = checkpoints.Checkpointer(client, client.create_run(experiment_id).info.run_id)
        seconds = []
        for _ in range(saves):
            started = time.perf_counter()
            checkpointer.save(net, state)
            seconds.append(time.perf_counter() - started)
        checkpointer.close()
    save = statistics.median(seconds)
    print(f"checkpoint of [784,100,10]:    {1000 * save:5.1f} ms vs an epoch of {epoch:5.3f} s", end=" ")
    print(f"({save / epoch:.1%})")


def search_cost(trials: int = 10) -> None:
    """The search's own cost per trial (ask, tell, each job reopening its trial and reporting every epoch,
    the study's records on its parent): a study of ``trials`` short runs against a sweep of as many
    runs of the same length (target <= 0.3 s a trial)."""
    short = ("data=digits", "train.epochs=3")
    with tempfile.TemporaryDirectory() as sweep_dir, tempfile.TemporaryDirectory() as study_dir:
        sweep, _ = timed_command(sweep_dir, "-m", f"seed=range(0,{trials})", *short)
        study, _ = timed_command(
            study_dir,
            "-m",
            "search=ch3_eta_lmbda",
            *short,
            f"hydra.sweeper.n_trials={trials}",
            "hydra/sweeper/pruner=none",
        )
    print(f"{trials}-trial study vs {trials}-run sweep: {study:5.1f} s vs {sweep:5.1f} s", end=" ")
    print(f"({(study - sweep) / trials:+.2f} s a trial)")


def server_throughput(writers: int = 8, epochs: int = 150) -> None:
    """Epochs a PostgreSQL-backed tracking server logs per second: ``writers`` processes each logging
    ``epochs`` epochs of a run's metrics (one request an epoch, as a job does), all at once."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from servers import createdb, mlflow_server, postgres

    with postgres() as cluster, tempfile.TemporaryDirectory() as tmp:
        with mlflow_server(Path(tmp), backend=createdb(cluster, "mlflow"), workers=2) as url:  # make server's
            experiment = MlflowClient(url).create_experiment("throughput")
            started = time.perf_counter()
            with multiprocessing.Pool(writers) as pool:
                pool.starmap(log_epochs, [(url, experiment, epochs)] * writers)
            seconds = time.perf_counter() - started
    print(
        f"tracking server on PostgreSQL:  {writers * epochs / seconds:5.0f} epochs logged a second "
        f"({writers} writers, {writers * epochs} epochs in {seconds:.1f} s)"
    )


def log_epochs(url: str, experiment: str, epochs: int) -> None:
    client = MlflowClient(url)
    run_id = client.create_run(experiment).info.run_id
    for epoch in range(1, epochs + 1):
        stamp = int(time.time() * 1000)
        metrics = [Metric(key, 0.5, stamp, epoch) for key in (*CURVES, EPOCH_SECONDS, ETA)]
        client.log_batch(run_id, metrics=metrics, synchronous=True)


def main() -> None:
    server_throughput()
    search_cost()
    checkpoint_cost()
    engine = statistics.median(engine_epochs())
    with tempfile.TemporaryDirectory() as tmp:
        report_run("default run, fresh store", *timed_command(tmp), engine)
        report_run("default run, existing store", *timed_command(tmp), engine)
    with tempfile.TemporaryDirectory() as basic_dir, tempfile.TemporaryDirectory() as joblib_dir:
        basic, _ = timed_command(basic_dir, "-m", "seed=0,1,2,3")
        joblib, _ = timed_command(
            joblib_dir, "-m", "seed=0,1,2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
        )
    print(f"4-run sweep, basic vs joblib:  {basic:5.1f} s vs {joblib:5.1f} s ({basic / joblib:.2f}x)")


if __name__ == "__main__":
    main()
