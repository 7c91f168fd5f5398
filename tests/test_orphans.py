"""A sweep's processes end with the process that launched it, however it dies (``nnexp.tether``): a
process tied to another, as a job's is to its launcher, and real sweeps, under the joblib launcher
(loky's workers) and submitit_local (a job per process, under submitit's controller), a real SIGKILL
to the launching process alone, and every process of its group watched. The sweeps are slow
(``make test-full``): each waits for two jobs to train, tens of seconds here."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import descendants, group, running

from nnexp import store, tether

LAUNCHERS = {
    "joblib": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
    "submitit_local": ("hydra/launcher=submitit_local",),
}
ENDED_WITHIN = 10  # seconds, what the sweep's processes are given to end once the launcher is killed
# Two jobs that would train for hours: they are killed long before
ENDLESS = ("seed=1,2", "data=digits", "train.epochs=1000000")


# A job's process, as far as the tie goes: it sets itself up as every nnexp process does, then answers
# each line it is sent, for as long as it lives.
JOB = """
import sys
from nnexp import process
process.prepare()
print("ready", flush=True)
for line in sys.stdin:
    print(line, end="", flush=True)
"""


def test_a_job_process_lives_while_its_launcher_does_and_dies_with_it():
    launcher = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    env = {**os.environ, tether.VARIABLE: tether.name(launcher.pid)}
    job = subprocess.Popen(
        [sys.executable, "-c", JOB], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert job.stdout.readline() == "ready\n"
        job.stdin.write("still here\n")
        job.stdin.flush()
        assert job.stdout.readline() == "still here\n"  # tied, and alive while its launcher is
        launcher.kill()
        launcher.wait()
        assert job.wait(timeout=ENDED_WITHIN) == -signal.SIGKILL
    finally:
        for process in (launcher, job):
            process.kill()
            process.wait()


def test_a_job_process_whose_launcher_has_ended_dies_as_it_starts():
    launcher = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    env = {**os.environ, tether.VARIABLE: tether.name(launcher.pid)}
    launcher.communicate(b"\n")  # it ends
    job = subprocess.run(
        [sys.executable, "-c", JOB], env=env, input="", capture_output=True, text=True, timeout=60
    )
    assert job.returncode == -signal.SIGKILL and job.stdout == ""


def jobs_training(folder: Path, sweep: subprocess.Popen, seconds: float = 300) -> list:
    """The sweep's two job runs, once each has logged its first epoch. The store is read only once the
    sweep has set it up (its handoff file is written): an MLflow client sets up a store as it is made,
    and one made sooner would migrate the new store's tables alongside the sweep's own set-up."""
    client = None
    deadline = time.monotonic() + seconds
    while True:
        assert sweep.poll() is None, (folder / "stderr").read_text()
        assert time.monotonic() < deadline, "the jobs never reached their first epoch"
        if list(folder.glob("multirun/*/*/nnexp_sweep.json")):
            client = client or store.connect(f"sqlite:///{folder / 'mlflow.db'}")
            found = client.search_runs([e.experiment_id for e in client.search_experiments()])
            jobs = [run for run in found if run.data.tags.get("nnexp.sweep") != "true"]
            if len(jobs) == 2 and all(client.get_metric_history(r.info.run_id, "eta") for r in jobs):
                return jobs
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_sweeps_jobs_end_when_its_launching_process_is_killed(tmp_path, launcher):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the store: tmp_path's
    with (tmp_path / "stdout").open("w") as out, (tmp_path / "stderr").open("w") as err:
        sweep = subprocess.Popen(
            [sys.executable, "-m", "nnexp.run", "-m", *LAUNCHERS[launcher], *ENDLESS],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group, as a shell's job: the group is the sweep
        )
    tree = [sweep.pid]
    try:
        jobs = jobs_training(tmp_path, sweep)
        tree = descendants(sweep.pid)
        job_pids = {int(run.data.tags["nnexp.pid"]) for run in jobs}
        # the jobs run below the launcher, alive (under joblib, long after the thread that started them)
        assert job_pids <= set(tree[1:])

        sweep.kill()  # the launching process alone
        sweep.wait()
        assert running(group(sweep.pid), seconds=ENDED_WITHIN) == []
        assert group(sweep.pid) == []
        assert running(tree) == []
    finally:
        for pid in running(tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        sweep.wait()
