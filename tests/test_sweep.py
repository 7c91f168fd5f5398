"""Sweeps (``python -m nnexp.run -m``): one parent run per multirun, every job's run nested under it."""

import os
import signal
import subprocess
import sys

import pytest
from joblib import Parallel, delayed
from mlflow.tracking import MlflowClient

SMOKE = ("experiment=smoke", "data=digits")
DIVERGES = ("activation=relu", "init=large")  # with train.eta=1000: NaN cost in the first epoch, any seed


def sweep_runs(uri):
    """(client, the parent run, its children in job order); asserts there is exactly one sweep."""
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [run for run in runs if run.data.tags.get("nnexp.sweep") == "true"]
    children = sorted((run for run in runs if run is not parent), key=lambda r: int(r.data.tags["nnexp.job"]))
    assert all(run.data.tags["mlflow.parentRunId"] == parent.info.run_id for run in children)
    assert all(run.data.tags["nnexp.sweep_id"] == parent.info.run_id for run in children)
    return client, parent, children


@pytest.mark.parametrize(
    "launcher",
    [
        pytest.param((), id="basic"),
        # 14 s: in make test-full; make test's joblib sweeps are tests/test_concurrency.py's
        pytest.param(
            ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), id="joblib", marks=pytest.mark.slow
        ),
    ],
)
def test_sweep_nests_every_job_under_one_finished_parent(store, nnexp_command, launcher):
    result = nnexp_command("-m", *launcher, *SMOKE, "cost=quadratic,crossentropy")
    assert result.returncode == 0, result.stderr
    client, parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED"
    overrides = [f"{' '.join(SMOKE)} cost={cost}" for cost in ("quadratic", "crossentropy")]
    assert [run.data.tags["nnexp.overrides"] for run in children] == overrides
    assert [run.info.run_name for run in children] == [f"{o} seed=0" for o in overrides]
    for run in children:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "validation_accuracy")
        assert [m.step for m in history] == [1, 2, 3]
    report = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"accuracy.png", "cost.png", "summary.csv", "summary.md"} <= report
    for run in children:  # each job's last line: its run's id and how it ended
        assert f"{run.info.run_name}: run {run.info.run_id} FINISHED, best validation " in result.stdout
    url = (
        f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs?workflowType=machine_learning"
    )
    assert result.stdout.splitlines()[-2:] == [  # the sweep's: its id, its count, what next
        f"sweep {parent.info.run_id} FINISHED, 2 runs, 0 failed: {url}",
        f"report: python -m nnexp.report --sweep {parent.info.run_id}",
    ]


def test_a_diverging_job_fails_alone_and_fails_the_parent(store, nnexp_command):
    result = nnexp_command("-m", *SMOKE, *DIVERGES, "train.eta=1000,0.5")
    assert result.returncode == 1, result.stderr  # the sweep went on, then said it failed ...
    client, parent, (diverged, trained) = sweep_runs(store)
    assert result.stderr.splitlines()[-2].startswith(f"sweep {parent.info.run_id} FAILED, 2 runs, 1 failed: ")
    assert diverged.info.status == "FAILED"
    assert diverged.data.tags["failure_reason"].startswith("diverged: ")
    assert diverged.data.metrics["epochs_run"] == 0
    assert trained.info.status == "FINISHED" and trained.data.metrics["epochs_run"] == 3
    assert parent.info.status == "FAILED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"summary.md"}


@pytest.mark.parametrize(
    "launcher",
    [
        pytest.param((), id="basic"),
        pytest.param(
            ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), id="joblib", marks=pytest.mark.slow
        ),
        pytest.param(("hydra/launcher=submitit_local",), id="submitit_local", marks=pytest.mark.slow),
    ],
)
def test_a_job_that_cannot_run_is_one_line_naming_it_and_the_sweep_counts_it(
    tmp_path, store, nnexp_run, launcher
):
    """Missing data in every job, in the launching process, in joblib's workers or in submitit's jobs
    (whose own output goes to log files: the launching process prints their lines): one line per job,
    naming it, no traceback; the sweep goes on, counts them, ends its parent FAILED and exits 1."""
    missing = str(tmp_path / "no-mnist")
    result = nnexp_run(
        "-m", *launcher, "data=mnist", "seed=0,1", env={**os.environ, "NNEXP_DATA_DIR": missing}
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    failures = sorted(line for line in result.stderr.splitlines() if line.startswith("job "))
    assert [line.split(":", 1)[0] for line in failures] == [
        "job 0 (data=mnist seed=0)",
        "job 1 (data=mnist seed=1)",
    ]
    assert all(f"NNEXP_DATA_DIR={missing}" in line for line in failures)
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(run.data.tags.get("nnexp.sweep"), run.info.status) for run in runs] == [("true", "FAILED")]
    (parent,) = runs
    assert result.stderr.splitlines()[-2].startswith(f"sweep {parent.info.run_id} FAILED, 2 runs, 2 failed: ")


@pytest.mark.mnist
@pytest.mark.parametrize(
    "launcher",
    [
        pytest.param((), id="basic"),
        pytest.param(
            ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), id="joblib", marks=pytest.mark.slow
        ),
    ],
)
def test_ctrl_c_ends_the_jobs_and_the_parent_killed(tmp_path, store, interruptible, launcher):
    process = subprocess.Popen(
        [sys.executable, "-m", "nnexp.run", "-m", *launcher, "seed=0,1"],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=interruptible,
    )
    jobs = 2 if launcher else 1  # joblib's two run side by side
    started = (line for line in process.stdout if "epoch 1/30" in line)
    for _ in range(jobs):  # each job at its first epoch
        next(started)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C does: to the whole process group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    _, parent, children = sweep_runs(store)
    assert len(children) == jobs
    assert [run.info.status for run in [parent, *children]] == ["KILLED"] * (1 + len(children))
    assert "Traceback" not in err and err.splitlines()[1:] == [  # the sweep's id, and how to go on
        f"resume: python -m nnexp.run resume={parent.info.run_id}"
    ]
    assert err.splitlines()[0].startswith(f"sweep {parent.info.run_id} KILLED: http://127.0.0.1:5000/")


@pytest.mark.slow
def test_a_warm_up_that_fails_raises_nothing_in_the_launchers_pool(tmp_path):
    """An error in any ``joblib.Parallel`` call kills the pool's workers, the launcher's jobs with them
    (seen once under load: test_search's joblib study). Workers that cannot warm up say nothing."""
    from nnexp.callbacks import warm_up

    bad = {"train": {"eta": "abc"}}  # a task no config accepts
    pool = Parallel(n_jobs=2, backend="loky")
    assert pool(delayed(warm_up)(bad, f"sqlite:///{tmp_path / 'mlflow.db'}") for _ in range(2)) == [
        None,
        None,
    ]
