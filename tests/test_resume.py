"""Crash safety: real runs and sweeps killed by real signals, then ``resume=<id>``, against a real store."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from nnexp import checkpoints
from nnexp.engine.history import CURVES

RUN = ("regularization=dropout", "train.momentum=0.5", "train.epochs=8", "data.train_size=20000")
SWEEP = ("-m", "seed=1,2,3,4", "data.train_size=10000", "train.epochs=6")


def start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nnexp.run", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def kill_after(process: subprocess.Popen, line_wanted, delay: float = 0.0) -> None:
    """SIGKILL the process (and its workers: the whole process group) ``delay`` seconds after it prints
    a wanted line."""
    for line in process.stdout:
        if line_wanted(line):
            break
    else:
        raise AssertionError("the process ended before the moment to kill it")
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def kill_when(process: subprocess.Popen, uri: str, ready, deadline_s: float = 300) -> None:
    """SIGKILL the sweep's process group as soon as its store shows what ``ready(client, runs)`` waits
    for: a moment defined by what has happened, whatever the machine's speed. The store is read only
    once the sweep has set it up (its handoff file is written): two processes must not create one."""
    deadline = time.monotonic() + deadline_s
    folder = Path(uri.removeprefix("sqlite:///")).parent
    while not list(folder.glob("multirun/*/*/nnexp_sweep.json")) or not ready(*runs(uri)):
        assert process.poll() is None, "the process ended before the moment to kill it"
        assert time.monotonic() < deadline, "the store never reached the state to kill at"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def two_finished_and_another_in_its_second_epoch(client: MlflowClient, found) -> bool:
    jobs = [run for run in found if run.data.tags.get("nnexp.sweep") != "true"]
    finished = [run for run in jobs if run.info.status == "FINISHED"]
    running = [run for run in jobs if run.info.status == "RUNNING"]
    return len(finished) >= 2 and any(
        len(client.get_metric_history(run.info.run_id, "eta")) >= 2 for run in running
    )


def runs(uri: str):
    client = MlflowClient(uri)
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


def curves(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in (*CURVES, "eta")
    }


@pytest.mark.mnist
def test_a_killed_run_resumes_in_the_same_run_bit_for_bit(tmp_path, store, nnexp_command):
    killed = start(tmp_path, *RUN)
    kill_after(killed, lambda line: "epoch 3/8" in line, delay=random.uniform(0, 0.6))  # in epoch 4 or 5
    client, (run,) = runs(store)
    assert run.info.status == "RUNNING"  # killed without a word

    result = nnexp_command(f"resume={run.info.run_id}")
    assert result.returncode == 0, result.stderr
    client, (resumed,) = runs(store)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.metrics["epochs_run"] == 8
    resumed_curves = curves(client, run.info.run_id)
    assert all([step for step, _ in values] == list(range(1, 9)) for values in resumed_curves.values())

    whole = tmp_path / "uninterrupted"
    whole.mkdir()
    done = nnexp_command(*RUN, cwd=whole, env={"MLFLOW_TRACKING_URI": f"sqlite:///{whole / 'mlflow.db'}"})
    assert done.returncode == 0, done.stderr
    other, (reference,) = runs(f"sqlite:///{whole / 'mlflow.db'}")
    assert resumed_curves == curves(other, reference.info.run_id)


@pytest.mark.mnist
@pytest.mark.parametrize(
    "launcher",
    [
        pytest.param((), id="basic"),
        # the same, its jobs taken up in joblib's workers: half a minute, so make test-full's
        pytest.param(
            ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), id="joblib", marks=pytest.mark.slow
        ),
    ],
)
def test_a_killed_sweep_resumes_its_unfinished_jobs_only(tmp_path, store, nnexp_command, launcher):
    killed = start(tmp_path, *SWEEP, *launcher)
    # basic: jobs one after the other, killed while the third trains; joblib: two at a time, killed once
    # two have finished and another is in its second epoch (by the time the kill lands, a fourth may be
    # ending: the states are read after it)
    kill_when(killed, store, two_finished_and_another_in_its_second_epoch)
    client, before = runs(store)
    finished_before = {r.info.run_id: r.info.end_time for r in before if r.info.status == "FINISHED"}
    unfinished = [
        r for r in before if r.info.status == "RUNNING" and r.data.tags.get("nnexp.sweep") != "true"
    ]
    assert len(finished_before) >= 2 and unfinished

    parent_id = next(r.info.run_id for r in before if r.data.tags.get("nnexp.sweep") == "true")
    result = nnexp_command(f"resume={parent_id}", "--verbose", env={"NNEXP_LOG_LEVEL": None})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2].startswith(f"sweep {parent_id} FINISHED, 4 runs, 0 failed: ")
    if launcher:  # joblib's own log line, which --verbose shows: the sweep's launcher settings again
        assert "Joblib.Parallel(n_jobs=2" in result.stdout

    client, after = runs(store)
    parent = next(r for r in after if r.info.run_id == parent_id)
    children = [r for r in after if r.info.run_id != parent_id]
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.tags["nnexp.job"] for r in children) == ["0", "1", "2", "3"]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == parent_id
        assert [m.step for m in client.get_metric_history(child.info.run_id, "eta")] == [1, 2, 3, 4, 5, 6]
        if child.info.run_id in finished_before:
            assert child.info.end_time == finished_before[child.info.run_id]  # left alone
    assert {a.path for a in client.list_artifacts(parent_id)} >= {"summary.md", "accuracy.png", "jobs.json"}


def test_a_run_is_trained_further_in_the_same_run(store, nnexp_command):
    first = nnexp_command("data=digits", "train.epochs=2", "train.momentum=0.5")
    assert first.returncode == 0, first.stderr
    client, (run,) = runs(store)
    further = nnexp_command(f"resume={run.info.run_id}", "train.epochs=4")
    assert further.returncode == 0, further.stderr
    label = "data=digits train.epochs=4 train.momentum=0.5 seed=0"  # its new target, not its name's 2
    lines = further.stdout.splitlines()
    assert lines[0] == f"{label}: run {run.info.run_id} resumed from its checkpoint at epoch 2"
    assert lines[1].startswith(f"{label} | epoch 3/4 ")
    client, (again,) = runs(store)
    assert again.info.status == "FINISHED"
    assert again.data.params["train.epochs"] == "2" and again.data.tags["nnexp.train_epochs"] == "4"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eta")] == [1, 2, 3, 4]
    assert again.data.metrics["epochs_run"] == 4


REFUSALS = [
    (["resume=0123456789abcdef0123456789abcdef"], "unknown run id '0123456789abcdef0123456789abcdef' in"),
    (
        ["resume={finished}"],
        "run {finished} already FINISHED: nothing to resume (give a larger train.epochs to go further)",
    ),
    (
        ["resume={finished}", "train.epochs=1"],
        "train.epochs=1 is below the 2 epochs run {finished} trains to",
    ),
    (
        ["resume={finished}", "cost=quadratic"],
        "resume takes the run's own config; it may only change train.epochs",
    ),
    (["resume={bare}"], "run {bare} has no checkpoint to resume from"),
    (["resume={other}"], "unknown run id '{other}' in the MLflow store sqlite:///"),  # a run of another store
]


def test_refusals_are_one_line_and_change_nothing(tmp_path, store, nnexp_command):
    assert nnexp_command("data=digits", "train.epochs=2").returncode == 0
    client, (finished,) = runs(store)
    bare = client.create_run(finished.info.experiment_id).info.run_id  # a run nnexp did not start
    client.set_terminated(bare, "KILLED")
    other = MlflowClient(f"sqlite:///{tmp_path / 'other.db'}")
    ids = {"finished": finished.info.run_id, "bare": bare, "other": other.create_run("0").info.run_id}
    before = [(r.info.run_id, r.info.status, r.info.end_time, r.data.tags) for r in runs(store)[1]]
    for args, message in REFUSALS:
        result = nnexp_command(*(arg.format(**ids) for arg in args))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0].startswith(message.format(**ids)), lines[0]
        assert [
            (r.info.run_id, r.info.status, r.info.end_time, r.data.tags) for r in runs(store)[1]
        ] == before


@pytest.mark.mnist
def test_a_run_live_in_another_process_is_not_resumed(tmp_path, store, nnexp_command):
    live = start(tmp_path, "train.epochs=30")
    try:
        next(line for line in live.stdout if "epoch 1/30" in line)
        _, (run,) = runs(store)
        result = nnexp_command(f"resume={run.info.run_id}")
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"run {run.info.run_id} is RUNNING in process {live.pid} on {run.data.tags['nnexp.host']}: "
            "two processes must not write one run"
        )
    finally:
        os.killpg(live.pid, signal.SIGKILL)
        live.wait()
    _, (after,) = runs(store)
    assert (
        after.info.status == "RUNNING"
        and len(MlflowClient(store).get_metric_history(run.info.run_id, "eta")) >= 1
    )


WRITER = """
import sys
from mlflow.tracking import MlflowClient
from nnexp import checkpoints
from nnexp.engine import Network
from nnexp.engine.training import TrainingState
client = MlflowClient(sys.argv[1])
saver = checkpoints.Checkpointer(client, sys.argv[2])
net = Network([784, 1000, 1000, 10], seed=0)   # about 7 MB a checkpoint: writes take a while
state = TrainingState(eta=0.5)
while True:
    state.epoch += 1
    net.biases[0][:] = state.epoch
    saver.save(net, state)
    print(state.epoch, flush=True)
"""


def test_a_checkpoint_write_killed_midway_leaves_the_last_one_whole(tmp_path, store):
    client = MlflowClient(store)
    run_id = client.create_run(
        client.create_experiment("ckpt", artifact_location=(tmp_path / "art").as_uri())
    ).info.run_id
    rng = random.Random(0)
    for attempt in range(5):  # each a new process: seconds of imports
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, store, run_id], stdout=subprocess.PIPE, text=True
        )
        written = int(writer.stdout.readline())  # at least one checkpoint whole
        time.sleep(rng.uniform(0, 0.3))  # then a moment that falls inside a write most of the time
        writer.kill()
        writer.wait()
        net, state = checkpoints.load(client, run_id)
        assert state.epoch >= written and state.eta == 0.5, attempt
        np.testing.assert_array_equal(net.biases[0], np.full(1000, state.epoch, dtype=np.float32))


@pytest.mark.mnist
def test_a_preempted_submitit_job_is_requeued_and_goes_on_in_its_run(tmp_path, store):
    """submitit's local executor signals a job as SLURM does when it preempts it (USR2): the job
    checkpoints, is requeued, runs again with the same job number and goes on in the same run."""
    sweep = start(
        tmp_path, "-m", "hydra/launcher=submitit_local", "seed=1,2", "data.train_size=10000", "train.epochs=6"
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("multirun/*/*/nnexp_sweep.json")):  # the store is set up: watch it
        assert time.monotonic() < deadline
        time.sleep(0.2)
    client = MlflowClient(store)
    while time.monotonic() < deadline:  # the jobs' output goes to submitit's logs: watch the store
        running = [r for r in runs(store)[1] if r.data.tags.get("nnexp.job") == "0"]
        if running and len(client.get_metric_history(running[0].info.run_id, "eta")) >= 2:
            break
        time.sleep(0.2)
    (preempted,) = running
    os.kill(int(preempted.data.tags["nnexp.pid"]), signal.SIGUSR2)
    assert sweep.wait(timeout=300) == 0

    _, after = runs(store)
    children = [r for r in after if r.data.tags.get("nnexp.sweep") != "true"]
    assert sorted(r.data.tags["nnexp.job"] for r in children) == ["0", "1"]  # no second run for job 0
    job0 = next(r for r in children if r.data.tags["nnexp.job"] == "0")
    assert job0.info.run_id == preempted.info.run_id and job0.info.status == "FINISHED"
    assert job0.data.tags["nnexp.pid"] != preempted.data.tags["nnexp.pid"]  # taken up by the requeued job
    assert [m.step for m in client.get_metric_history(job0.info.run_id, "eta")] == [1, 2, 3, 4, 5, 6]
