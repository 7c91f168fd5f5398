"""Many commands at once, as a shell loop or a scheduler starts them: real processes started together
in one directory, on one sqlite store (new, or existing), each behaving as if it ran alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from nnexp.vocabulary import Status, Tag

SMOKE = ("experiment=smoke", "data=digits")  # 3 epochs on the 8x8 digits: seconds
JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")


def sweep(k: int) -> list[str]:
    """The k-th sweep: 2 joblib jobs, seeds of its own."""
    return ["-m", *JOBLIB, *SMOKE, f"seed={10 * k + 1},{10 * k + 2}"]


def single(k: int) -> list[str]:
    return [*SMOKE, f"seed={100 + k}"]


def start_together(folder: Path, commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Start every command at once (within milliseconds of each other), then wait for them all."""
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "nnexp.run", *command],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    return [
        subprocess.CompletedProcess(command, process.wait(timeout=600), *process.communicate())
        for command, process in zip(commands, started, strict=True)
    ]


def check_apart(folder: Path, sweeps: int, singles: int) -> None:
    """Every command's runs are its own and whole: one parent per sweep whose children are exactly its
    jobs, every run FINISHED with all its epochs, none left RUNNING."""
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    found = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert not [run for run in found if run.info.status != Status.FINISHED]
    parents = [run for run in found if run.data.tags.get(Tag.SWEEP) == "true"]
    assert len(parents) == sweeps
    for parent in parents:
        children = [run for run in found if run.data.tags.get(Tag.PARENT) == parent.info.run_id]
        seeds = sorted(run.data.tags[Tag.SEED] for run in children)
        k = int(seeds[0]) // 10
        assert seeds == [str(10 * k + 1), str(10 * k + 2)], seeds  # its own jobs, no other's
        assert sorted(run.data.tags[Tag.JOB] for run in children) == ["0", "1"]
        assert all(run.data.tags[Tag.SWEEP_ID] == parent.info.run_id for run in children)
    alone = [run for run in found if run.data.tags.get(Tag.SWEEP_ID) == "" and Tag.SWEEP not in run.data.tags]
    assert len(alone) == singles
    for run in found:
        if Tag.SWEEP not in run.data.tags:
            assert [m.step for m in client.get_metric_history(run.info.run_id, "eta")] == [1, 2, 3]


def run_together(folder: Path, sweeps: int, singles: int, existing: bool) -> None:
    if existing:
        (done,) = start_together(folder, [single(99)])
        assert done.returncode == 0, done.stderr
    commands = [sweep(k) for k in range(sweeps)] + [single(k) for k in range(singles)]
    for result in start_together(folder, commands):
        assert result.returncode == 0, f"{' '.join(result.args)}\n{result.stderr}"
        assert "Traceback" not in result.stderr
    check_apart(folder, sweeps, singles + existing)
    assert len(list(folder.glob("multirun/*/*/nnexp_sweep.json"))) == sweeps  # a directory each


def test_two_sweeps_and_a_run_started_together_on_a_new_store_stay_apart(tmp_path):
    """make test's version; make test-full starts 4 sweeps and 2 runs, on a new and an existing store."""
    run_together(tmp_path, sweeps=2, singles=1, existing=False)


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True], ids=["new store", "existing store"])
def test_four_sweeps_and_two_runs_started_together_stay_apart(tmp_path, existing):
    run_together(tmp_path, sweeps=4, singles=2, existing=existing)


@pytest.mark.slow
def test_two_searches_of_one_preset_started_together_stay_apart(tmp_path):
    searches = [
        ["-m", "search=ch3_eta_lmbda", *SMOKE, "hydra.sweeper.n_trials=3", f"seed={seed}"] for seed in (1, 2)
    ]
    for result in start_together(tmp_path, searches):
        assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [run for run in found if run.info.status != Status.FINISHED]
    parents = [run for run in found if Tag.SEARCH in run.data.tags]
    assert sorted(parent.data.tags[Tag.SEARCH] for parent in parents) == [
        f"ch3_eta_lmbda experiment=smoke data=digits seed={seed}" for seed in (1, 2)
    ]
    for parent in parents:
        trials = [run for run in found if run.data.tags.get(Tag.PARENT) == parent.info.run_id]
        assert sorted(run.data.tags[Tag.TRIAL] for run in trials) == ["0", "1", "2"]
        assert {run.data.params["seed"] for run in trials} == {parent.data.tags[Tag.SEARCH].split("=")[-1]}
