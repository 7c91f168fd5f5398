"""What the harness costs on top of the engine, measured the way a user meets it: `make bench-harness`.

    python benchmarks/bench_harness.py              # every section, about 10 minutes on 2 cores
    python benchmarks/bench_harness.py sweep run    # some of them

Sections (and their targets):

- ``run``: a 1-epoch run, command to exit, on an existing store: the fixed cost beyond its epoch
  (<= 2.5 s); a default 30-epoch run, on a fresh store then an existing one.
- ``epoch``: a training epoch through the CLI at mini-batch 10 (train, validation and test evaluated,
  metrics logged, checkpointed), from runs of 2 and 7 epochs, against the book's per-example
  algorithm on the same epoch (>= 12x faster).
- ``sweep``: an 8-run sweep of the default 30-epoch run with 2 joblib jobs against the engine alone
  training the same 8 runs on 2 cores, one BLAS thread each (within 1.3x).
- ``launchers``: a 4-run sweep of 8-epoch runs, joblib with 2 jobs against the basic launcher (>= 1.6x).
- ``memory``: peak RSS of the default 30-epoch run (<= 300 MB), and of a joblib worker from its 2nd
  to its 8th job (no growth beyond 5%).
- ``checkpoint``: a checkpoint of [784,100,10] against one of its epochs at mini-batch 10 (<= 5%).
- ``learning_speed``: measuring chapter 5's speeds of learning after an epoch (the first 1,000 training
  images) against one epoch of [784,30,30,30,30,10] at mini-batch 10 (<= 10%).
- ``search``: a search's own cost per trial, beyond the runs themselves (<= 0.3 s).
- ``server``: a PostgreSQL-backed tracking server's throughput, epochs logged a second by 8 jobs.
- ``server_start``: `make server` and `make ui`: seconds to answer, memory, seconds to stop.
- ``writers``: sweeps of 2 jobs started together on one store, doubled until one fails or a run takes
  twice as long as alone: on sqlite, and on a PostgreSQL-backed server (the README's advice).

The machine is noisy: each command is timed the fastest of three where it says so, and what matters
is the ratios, measured side by side in one run.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from reference_network import ReferenceNetwork, as_column_pairs
from threadpoolctl import threadpool_limits

from nnexp import checkpoints, store
from nnexp.engine import Network, data, learning_speeds, sgd
from nnexp.engine.history import CURVES, EPOCH_SECONDS, ETA
from nnexp.engine.training import TrainingState

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
DEFAULT = {"regularizer": "l2", "lmbda": 5.0}  # conf/config.yaml's network: [784,30,10], eta 0.5, batch 10
PEAK = "import atexit, runpy, sys; atexit.register(lambda: print('VmHWM', next(l.split()[1] for l in \
open('/proc/self/status') if l.startswith('VmHWM')), file=sys.stderr)); runpy.run_module('nnexp.run', \
run_name='__main__')"  # python -m nnexp.run, reporting its own peak RSS (getrusage would carry ours)


def nnexp_run(cwd: str, *args: str) -> tuple[float, str, str]:
    """``python -m nnexp.run *args`` in ``cwd``: (seconds from command to exit, stdout, stderr)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"nnexp.run {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout, done.stderr


def fastest(cwd: str, *args: str, times: int = 3) -> tuple[float, str]:
    return min(nnexp_run(cwd, *args)[:2] for _ in range(times))


def epoch_seconds(stdout: str) -> list[float]:
    """The "(0.3s)" at the end of each epoch line."""
    return [float(s) for s in re.findall(r"\| epoch \d+/\d+ .*\(([\d.]+)s\)", stdout)]


def section_run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh, _, _ = nnexp_run(tmp, "train.epochs=1")
        total, stdout = fastest(tmp, "train.epochs=1")
        epoch = epoch_seconds(stdout)[0]
        print(
            f"1-epoch run, command to exit:   {total:5.2f} s, {total - epoch:5.2f} s beyond its epoch "
            f"({epoch:.2f} s; the very first, on a fresh store and cache: {fresh:.2f} s)"
        )
        default, stdout = fastest(tmp, times=1)
        print(
            f"default 30-epoch run:           {default:5.2f} s ({sum(epoch_seconds(stdout)):.1f} s of epochs)"
        )


def book_epoch() -> float:
    """Seconds of the book's per-example network.py for one epoch of [784,30,10] at mini-batch 10,
    with validation and test evaluated."""
    mnist = data.load("mnist")
    book = ReferenceNetwork([784, 30, 10])
    train = as_column_pairs(mnist.train, one_hot_targets=True)
    validation, test = (as_column_pairs(s, one_hot_targets=False) for s in (mnist.validation, mnist.test))
    started = time.perf_counter()
    book.sgd_epoch(train, 10, 0.5)
    book.evaluate(validation), book.evaluate(test)
    return time.perf_counter() - started


def section_epoch() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nnexp_run(tmp, "train.epochs=1")
        short, _ = fastest(tmp, "train.epochs=2")
        long, _ = fastest(tmp, "train.epochs=7")
    cli = (long - short) / 5
    book = book_epoch()
    print(
        f"epoch through the CLI, batch 10: {cli:5.3f} s vs the book's per-example {book:5.2f} s "
        f"({book / cli:.1f}x faster)"
    )


def engine_run(seed: int) -> None:
    with threadpool_limits(limits=1):
        sgd(Network([784, 30, 10], seed=seed, **DEFAULT), data.load("mnist"), 30, 10, 0.5)


def section_sweep() -> None:
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(engine_run, range(1, 9), chunksize=1)
    floor = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        sweep, _, _ = nnexp_run(
            tmp, "-m", "seed=range(1,9)", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
        )
    print(
        f"8-run 30-epoch sweep, joblib x2: {sweep:5.1f} s vs the engine alone {floor:5.1f} s "
        f"({sweep / floor:.2f}x)"
    )


def section_launchers() -> None:
    args = ("-m", "seed=range(0,4)", "train.epochs=8")
    with tempfile.TemporaryDirectory() as basic_dir, tempfile.TemporaryDirectory() as joblib_dir:
        basic, _, _ = nnexp_run(basic_dir, *args)
        joblib, _, _ = nnexp_run(joblib_dir, *args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    print(
        f"4-run 8-epoch sweep, basic vs joblib x2: {basic:5.1f} s vs {joblib:5.1f} s ({basic / joblib:.2f}x)"
    )


def section_memory() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _, _, stderr = nnexp_run(tmp)
        peak = int(re.search(r"VmHWM (\d+)", stderr).group(1)) / 1024
        print(f"default 30-epoch run:           peak RSS {peak:5.0f} MB")
        after = worker_rss_after_jobs(tmp, jobs=8)
        growth = after[7] / after[1] - 1
        print(
            f"joblib worker after jobs 1-8:   {' '.join(f'{mb:.0f}' for mb in after)} MB "
            f"(2nd to 8th: {growth:+.1%})"
        )


def worker_rss_after_jobs(cwd: str, jobs: int) -> list[float]:
    """The resident memory (MB) of a joblib worker as each of its first ``jobs`` jobs ends: a sweep of
    twice as many short runs on 2 workers, sampled from /proc while it runs, matched with the end
    times of the runs each worker made (their ``nnexp.pid`` tag)."""
    samples: dict[int, list[tuple[float, float]]] = {}
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nnexp.run",
            "-m",
            f"seed=range(0,{2 * jobs})",
            "train.epochs=2",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
        ],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sampler = threading.Thread(target=sample_descendants, args=(sweep, samples), daemon=True)
    sampler.start()
    sweep.wait()
    sampler.join()
    client = MlflowClient(f"sqlite:///{cwd}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    runs = [
        run for run in runs if "nnexp.pid" in run.data.tags and run.data.tags.get("nnexp.sweep") != "true"
    ]
    busiest = max({int(r.data.tags["nnexp.pid"]) for r in runs}, key=lambda pid: len(samples.get(pid, ())))
    ends = sorted(r.info.end_time / 1000 for r in runs if int(r.data.tags["nnexp.pid"]) == busiest)[:jobs]
    return [max(rss for t, rss in samples[busiest] if t <= end + 0.05) for end in ends]


def sample_descendants(process: subprocess.Popen, samples: dict, every: float = 0.05) -> None:
    """(time, RSS in MB) of every process under ``process``, by pid, until it ends."""
    while process.poll() is None:
        for pid in descendants(process.pid):
            samples.setdefault(pid, []).append((time.time(), rss_mb(pid)))
        time.sleep(every)


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, their children, and so on (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    stack, found = [pid], []
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"VmRSS:\s+(\d+)", status)  # a process that has just ended has none
    return int(found.group(1)) / 1024 if found else 0.0


def section_checkpoint(saves: int = 20) -> None:
    dataset = data.load("mnist")
    net = Network([784, 100, 10], seed=0, **DEFAULT)
    state = TrainingState()
    epoch = sgd(net, dataset, 1, 10, 0.5, momentum=0.5, state=state)[0][EPOCH_SECONDS]
    with tempfile.TemporaryDirectory() as tmp:
        client, experiment_id = store.open_experiment(f"sqlite:///{tmp}/mlflow.db", "bench")
        checkpointer = checkpoints.Checkpointer(client, client.create_run(experiment_id).info.run_id)
        seconds = []
        for _ in range(saves):
            started = time.perf_counter()
            checkpointer.save(net, state)
            seconds.append(time.perf_counter() - started)
        checkpointer.close()
    save = float(np.median(seconds))
    print(f"checkpoint of [784,100,10]:     {1000 * save:5.1f} ms", end=" ")
    print(f"vs an epoch of {epoch:5.3f} s ({save / epoch:.1%})")


def section_learning_speed(times: int = 20) -> None:
    """The speeds are measured in numpy between epochs, whatever the backend: their cost against a
    training epoch (the default backend, one thread, without evaluation) of the chapter's deepest net,
    on one BLAS thread as the epoch and a sweep's jobs run, and on BLAS's own threads as a lone run
    (where a busy machine makes BLAS's threads wait for each other)."""
    dataset = data.load("mnist")
    net = Network([784, 30, 30, 30, 30, 10], seed=0, **DEFAULT)
    epochs = []
    for _ in range(3):
        started = time.perf_counter()
        sgd(net, dataset, 1, 10, 0.1, monitor=())
        epochs.append(time.perf_counter() - started)
    epoch = min(epochs)
    for threads, name in ((1, "one BLAS thread"), (None, "BLAS's own threads")):
        seconds = []
        with threadpool_limits(threads):
            for _ in range(times):
                started = time.perf_counter()
                learning_speeds(net, dataset.train)
                seconds.append(time.perf_counter() - started)
        measure = float(np.median(seconds))
        print(
            f"speeds of learning of [784,30,30,30,30,10], {name + ':':20} {1000 * measure:5.1f} ms", end=" "
        )
        print(f"vs an epoch of {epoch:5.3f} s ({measure / epoch:.1%})")


def section_search(trials: int = 10) -> None:
    short = ("data=digits", "train.epochs=3")
    with tempfile.TemporaryDirectory() as sweep_dir, tempfile.TemporaryDirectory() as study_dir:
        sweep, _, _ = nnexp_run(sweep_dir, "-m", f"seed=range(0,{trials})", *short)
        study, _, _ = nnexp_run(
            study_dir,
            "-m",
            "search=ch3_eta_lmbda",
            *short,
            f"hydra.sweeper.n_trials={trials}",
            "hydra/sweeper/pruner=none",
        )
    print(
        f"{trials}-trial study vs {trials}-run sweep: {study:5.1f} s vs {sweep:5.1f} s "
        f"({(study - sweep) / trials:+.2f} s a trial)"
    )


def section_server(writers: int = 8, epochs: int = 150) -> None:
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


def section_server_start(times: int = 3) -> None:
    """`make server` (2 workers) and `make ui` (1): seconds until each answers, on a new store and on
    the same store again, the memory of the whole process tree, and seconds to stop after SIGTERM."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from servers import Launched, descendants, resident, running

    for what, args in (("make server", ("--workers", "2")), ("make ui", ("ui",))):
        with tempfile.TemporaryDirectory() as tmp:
            for attempt in range(times):
                server = Launched(Path(tmp), *args)
                answered = server.answers()
                tree = descendants(server.process.pid)
                megabytes = resident(tree) / 2**20
                started = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                running(tree, seconds=30)
                store = "new store" if attempt == 0 else "same store"
                print(
                    f"{what:12s} {store:10s}: answers in {answered:4.1f} s, {len(tree)} processes "
                    f"{megabytes:4.0f} MB, stopped {time.monotonic() - started:3.1f} s after SIGTERM"
                )
                server.process.wait()


def sweeps_together(cwd: str, sweeps: int, env: dict[str, str]) -> tuple[float, int]:
    """``sweeps`` sweeps of 2 joblib jobs (3 epochs on 1,000 MNIST images) started together in ``cwd``:
    (seconds until the last ended, how many commands failed)."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nnexp.run",
                "-m",
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                "experiment=smoke",
                f"seed={2 * k},{2 * k + 1}",
            ],
            cwd=cwd,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for k in range(sweeps)
    ]
    failed = sum(process.wait() != 0 for process in processes)
    return time.perf_counter() - started, failed


def section_writers(most: int = 16) -> None:
    """How many sweeps of 2 jobs may start together on one store: doubled until a command fails or a
    run takes more than twice as long (wall time per run) as with one sweep alone; on a sqlite store,
    then on make server's PostgreSQL-backed tracking server."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from servers import createdb, mlflow_server, postgres

    def climb(name: str, folder: str, env: dict[str, str]) -> None:
        alone = None
        sweeps = 1
        while sweeps <= most:
            seconds, failed = sweeps_together(folder, sweeps, env)
            per_run = seconds / (2 * sweeps)
            alone = alone or per_run
            print(
                f"{name}: {sweeps:2d} sweeps together, {per_run:5.2f} s a run "
                f"({per_run / alone:.2f}x), {failed} failed"
            )
            if failed or per_run > 2 * alone:
                return
            sweeps *= 2

    with tempfile.TemporaryDirectory() as tmp:
        climb("sqlite store", tmp, {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"})
    with postgres() as cluster, tempfile.TemporaryDirectory() as tmp:
        with mlflow_server(Path(tmp), backend=createdb(cluster, "mlflow"), workers=2) as url:
            climb("PostgreSQL server", tmp, {"MLFLOW_TRACKING_URI": url})


def log_epochs(url: str, experiment: str, epochs: int) -> None:
    """What a job sends the server each epoch: one request with the epoch's metrics."""
    client = MlflowClient(url)
    run_id = client.create_run(experiment).info.run_id
    for epoch in range(1, epochs + 1):
        stamp = int(time.time() * 1000)
        metrics = [Metric(key, 0.5, stamp, epoch) for key in (*CURVES, EPOCH_SECONDS, ETA)]
        client.log_batch(run_id, metrics=metrics, synchronous=True)


SECTIONS: dict[str, Callable[[], None]] = {
    "run": section_run,
    "epoch": section_epoch,
    "sweep": section_sweep,
    "launchers": section_launchers,
    "memory": section_memory,
    "checkpoint": section_checkpoint,
    "learning_speed": section_learning_speed,
    "search": section_search,
    "server": section_server,
    "server_start": section_server_start,
    "writers": section_writers,
}


def main(argv: list[str]) -> None:
    unknown = [name for name in argv if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section {unknown[0]!r} (accepted: {', '.join(SECTIONS)})")
    data.load("mnist")  # decoded into the cache before anything is timed
    for name in argv or SECTIONS:
        SECTIONS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
