"""Hyper-parameter search: real Optuna studies (journal files in a temp dir) run as real multiruns, every
trial a run in a real MLflow store. The commands run in this process, but for the study killed by a
signal, which is a process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import open_dict
from optuna.distributions import FloatDistribution

from nnexp import config, report, search
from nnexp.study import study_of

DIGITS = ("-m", "search=ch3_eta_lmbda", "data=digits", "train.epochs=6")
# A space of one good and one hopeless setting, and a pruner that judges from the first complete
# trial: the hopeless trials must be stopped after their second epoch.
HOPELESS = (
    "train.eta=choice(1.0,0.0001)",
    "regularization.lmbda=1.0",
    "hydra.sweeper.pruner.n_startup_trials=1",
)


def study_runs(uri: str):
    """(client, the study's parent run, its trial runs by trial number)."""
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [run for run in runs if "nnexp.search" in run.data.tags]
    trials = sorted(
        (run for run in runs if run is not parent), key=lambda run: int(run.data.tags["nnexp.trial"])
    )
    assert all(run.data.tags["mlflow.parentRunId"] == parent.info.run_id for run in trials)
    return client, parent, trials


def study(folder, name: str) -> optuna.Study:
    """The study as Optuna itself reads it from the journal file beside the store in ``folder``."""
    backend = optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


@pytest.mark.parametrize(
    "launcher",
    [
        (),
        pytest.param(  # trials side by side (22 s): in make test-full, the basic launcher's in make test
            ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["basic", "joblib"],
)
def test_a_study_is_a_parent_run_with_a_child_run_per_trial(tmp_path, store, nnexp_command, launcher):
    result = nnexp_command(*DIGITS, *HOPELESS, "hydra.sweeper.n_trials=6", *launcher)
    assert result.returncode == 0, result.stderr
    client, parent, trials = study_runs(store)
    name = "ch3_eta_lmbda data=digits train.epochs=6 regularization.lmbda=1.0"
    assert parent.data.tags["nnexp.search"] == name and parent.info.status == "FINISHED"
    assert [run.data.tags["nnexp.trial"] for run in trials] == [str(n) for n in range(6)]
    states = {run.data.tags["nnexp.trial_state"] for run in trials}
    assert states <= {"COMPLETE", "PRUNED", "FAIL"} and "COMPLETE" in states

    pruned = [run for run in trials if run.data.tags["nnexp.trial_state"] == "PRUNED"]
    assert pruned, "the hopeless eta should have been pruned"
    for run in pruned:  # stopped early, and FINISHED with the epochs it trained
        assert run.info.status == "FINISHED" and run.data.params["train.eta"] == "0.0001"
        assert run.data.metrics["epochs_run"] < 6
    complete = [run for run in trials if run.data.tags["nnexp.trial_state"] == "COMPLETE"]
    best = max(complete, key=lambda run: run.data.metrics["best_validation_accuracy"])
    assert parent.data.metrics["best_validation_accuracy"] == best.data.metrics["best_validation_accuracy"]
    assert parent.data.metrics["best_trial"] == int(best.data.tags["nnexp.trial"])
    assert parent.data.tags["nnexp.best.train.eta"] == best.data.params["train.eta"]
    assert "best_test_accuracy" not in parent.data.metrics  # test data never enters the search

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert artifacts >= {"trials.csv", "optimization_history.png", "trial_curves.png", "summary.md"}
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path)))
    assert list(table["number"]) == list(range(6)) and set(table["run_id"]) == {r.info.run_id for r in trials}
    counts = (
        f"6 trials ({len(complete)} complete, {len(pruned)} pruned, {6 - len(complete) - len(pruned)} failed)"
    )
    assert result.stdout.splitlines()[-2].startswith(
        f"sweep {parent.info.run_id} FINISHED, study '{name}', {counts}, best validation accuracy "
    )
    assert result.stdout.splitlines()[-1] == f"report: python -m nnexp.report --sweep {parent.info.run_id}"

    stored = study(tmp_path, name)  # the study is where it says: beside the MLflow store
    assert [t.number for t in stored.trials] == list(range(6))
    assert stored.best_value == parent.data.metrics["best_validation_accuracy"]


def test_the_same_command_continues_the_study_up_to_n_trials(store, nnexp_command):
    """Run again with a larger n_trials (or by its run id), a study goes on from its last trial, and its
    pruner judges the new trials against the ones the earlier command ran: the MNIST study continued
    from 12 to 16 trials (marked slow), on the digits."""
    first = nnexp_command(*DIGITS, *HOPELESS, "hydra.sweeper.n_trials=4")
    assert first.returncode == 0 and " | epoch 1/6 " in first.stdout, first.stderr
    _, parent, _ = study_runs(store)
    again = nnexp_command(*DIGITS, *HOPELESS, "hydra.sweeper.n_trials=4")  # finished: runs nothing new
    assert again.returncode == 0 and " | epoch " not in again.stdout
    more = nnexp_command(*DIGITS, *HOPELESS, "hydra.sweeper.n_trials=6")
    assert more.returncode == 0, more.stderr
    _, continued, trials = study_runs(store)
    assert continued.info.run_id == parent.info.run_id and continued.info.status == "FINISHED"
    assert [run.data.tags["nnexp.trial"] for run in trials] == [str(n) for n in range(6)]
    # seed 0 draws the hopeless eta again for a continued trial: pruned, against the first command's trials
    pruned = [run for run in trials[4:] if run.data.tags["nnexp.trial_state"] == "PRUNED"]
    assert pruned and all(run.data.metrics["epochs_run"] < 6 for run in pruned)
    complete = [run for run in trials if run.data.tags["nnexp.trial_state"] == "COMPLETE"]
    best = max(run.data.metrics["best_validation_accuracy"] for run in complete)
    assert continued.data.metrics["best_validation_accuracy"] == best

    study_id = parent.info.run_id  # the same, from the study's run id alone
    refused = nnexp_command(f"resume={study_id}")
    assert refused.returncode == 1
    hint = "give a larger hydra.sweeper.n_trials to go further"
    assert refused.stderr.strip() == f"sweep {study_id} already FINISHED: nothing to resume ({hint})"
    assert nnexp_command(f"resume={study_id}", "hydra.sweeper.n_trials=7").returncode == 0
    _, _, trials = study_runs(store)
    assert [run.data.tags["nnexp.trial"] for run in trials] == [str(n) for n in range(7)]


def test_same_seed_same_trials(tmp_path, nnexp_command):
    def params(where: str) -> list[tuple[str, str]]:
        folder = tmp_path / where
        folder.mkdir()
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        done = nnexp_command(
            *DIGITS,
            "activation=choice(sigmoid,tanh)",
            "hydra.sweeper.n_trials=3",
            cwd=folder,
            env={"MLFLOW_TRACKING_URI": uri},
        )
        assert done.returncode == 0, done.stderr
        _, _, trials = study_runs(uri)
        for run in trials:  # its label (and name) shows what the search picked, to 4 significant digits
            eta = float(run.data.params["train.eta"])
            assert f" train.eta={eta:.4g} " in run.info.run_name and len(repr(eta)) > 7
            assert f"{run.info.run_name} | epoch 1/6 " in done.stdout
        keys = ("train.eta", "regularization.lmbda", "activation.name")
        return [tuple(run.data.params[key] for key in keys) for run in trials]

    first = params("first")
    assert first == params("second") and len(set(first)) == 3
    assert {activation for _, _, activation in first} <= {"sigmoid", "tanh"}  # a config group searched


@pytest.mark.parametrize(
    "args,message",
    [
        (["train.etaa=interval(0.1,1)"], "unknown key train.etaa (accepted: eta, epochs"),
        (["train.eta=interval(1,1)"], "train.eta=interval(1,1): an empty or inverted interval"),
        (["train.eta=interval(2,1)"], "train.eta=interval(2,1): an empty or inverted interval"),
        (
            ["train.eta=tag(log,interval(0,1))"],
            "train.eta=tag(log,interval(0,1)): a log interval needs bounds > 0",
        ),
        (["train.eta=interval(0,1)"], "invalid train.eta=0.0: accepted a number > 0"),
        (["activation=choice(sigmoid,cubic)"], "unknown activation 'cubic'"),
        (
            ["hydra.sweeper.sampler._target_=optuna.samplers.Nope"],
            "cannot build the sampler 'optuna.samplers.Nope'",
        ),
        (["hydra.sweeper.pruner._target_=nope.Pruner"], "cannot build the pruner 'nope.Pruner'"),
        (
            ["hydra.sweeper.storage=/nonexistent/dir/s.journal"],
            "cannot open the study's storage /nonexistent/dir",
        ),
        (
            ["hydra.sweeper.storage=postgresql://nnexp:s3cret@127.0.0.1:9/x"],
            "hydra.sweeper.storage=postgresql://nnexp:***@127.0.0.1:9/x holds a password",
        ),
        (["hydra.sweeper.storage=postgresql://nnexp@127.0.0.1:9/x"], "cannot open the study's storage"),
    ],
)
def test_bad_search_input_is_one_line_and_creates_nothing(tmp_path, nnexp_command, args, message):
    result = nnexp_command(*DIGITS, *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(message), lines[0]
    assert "s3cret" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []  # no store, no study, no multirun directory


@pytest.mark.slow  # 40-epoch trials, so that the kill lands mid-trial: a minute; make test-full
def test_a_killed_study_completes_to_n_trials_when_run_again(tmp_path, store, nnexp_command):
    """The study's own process is SIGKILLed mid-trial (its trial left RUNNING, as by a crash); the same
    command run again (in this process: its outcome is what matters) completes the study."""
    args = (*DIGITS, "train.epochs=40", "hydra.sweeper.n_trials=5")
    killed = subprocess.Popen(
        [sys.executable, "-m", "nnexp.run", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    next(line for line in killed.stdout if "trial=2 seed=0 | epoch 3/40" in line)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    _, parent, trials = study_runs(store)
    assert [run.info.status for run in trials] == ["FINISHED", "FINISHED", "RUNNING"]

    done = nnexp_command(*args)
    assert done.returncode == 0, done.stderr
    client, continued, trials = study_runs(store)
    assert continued.info.run_id == parent.info.run_id
    numbers = [int(run.data.tags["nnexp.trial"]) for run in trials]
    assert numbers == sorted(set(numbers)) == list(range(6))  # no duplicates; trial 2 tried again as 3
    interrupted = trials[2]
    assert interrupted.info.status == "FAILED" and interrupted.data.tags["nnexp.trial_state"] == "FAIL"
    assert interrupted.data.tags["failure_reason"].startswith("interrupted")
    assert trials[3].data.params["train.eta"] == interrupted.data.params["train.eta"]
    finished = study(tmp_path, continued.data.tags["nnexp.search"])
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in finished.trials) == 5


def test_the_report_reads_a_study(tmp_path, store, nnexp_command):
    assert nnexp_command(*DIGITS, "hydra.sweeper.n_trials=3").returncode == 0
    _, parent, trials = study_runs(store)
    assert report.main(["--sweep", parent.info.run_id, "--out", str(tmp_path / "report")]) == 0
    table = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert sorted(table["run_id"]) == sorted(run.info.run_id for run in trials)


@pytest.mark.slow
@pytest.mark.mnist
def test_a_short_mnist_study_continued_from_12_to_16_trials(store, nnexp_command):
    """The issue's short study: 8 epochs on 10,000 images, 12 trials then 4 more. Slow: the same on the
    digits is test_the_same_command_continues_the_study_up_to_n_trials."""
    short = ("-m", "search=ch3_eta_lmbda", "train.epochs=8", "data.train_size=10000")
    assert nnexp_command(*short, "hydra.sweeper.n_trials=12").returncode == 0
    result = nnexp_command(*short, "hydra.sweeper.n_trials=16")
    assert result.returncode == 0, result.stderr
    _, parent, trials = study_runs(store)
    assert [int(run.data.tags["nnexp.trial"]) for run in trials] == list(range(16))
    pruned = [run for run in trials if run.data.tags["nnexp.trial_state"] == "PRUNED"]
    assert len(pruned) >= 2 and all(run.data.metrics["epochs_run"] < 8 for run in pruned)
    complete = [run for run in trials if run.data.tags["nnexp.trial_state"] == "COMPLETE"]
    best = max(run.data.metrics["best_validation_accuracy"] for run in complete)
    assert parent.data.metrics["best_validation_accuracy"] == best


PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "search").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_passes_the_search_checks(composer, preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = composer(f"search={preset}")
    checked = []
    search.check(cfg, lambda overrides: checked.append(config.validate(composer(*overrides))))
    assert len(checked) == 2  # the lows and the highs of the space
    _, space = search.search_space(cfg, [f"search={preset}"])
    assert {"train.eta", "regularization.lmbda"} <= set(space)
    assert list(tmp_path.iterdir()) == []  # checking creates nothing


def test_the_chapter_3_preset_is_the_books_search(composer):
    cfg = composer("search=ch3_eta_lmbda")
    c = config.validate(cfg)
    assert (c.model.hidden, c.cost.name, c.regularization.name, c.train.epochs, c.train.batch_size) == (
        [30],
        "crossentropy",
        "l2",
        30,
        10,
    )
    _, space = search.search_space(cfg, [])
    assert space == {
        "train.eta": FloatDistribution(0.01, 10.0, log=True),
        "regularization.lmbda": FloatDistribution(0.01, 100.0, log=True),
    }


def test_a_study_is_named_by_its_fixed_overrides_only(composer):
    cfg = composer("search=ch3_eta_lmbda")
    with open_dict(cfg):
        cfg.hydra.overrides.task = [
            "search=ch3_eta_lmbda",
            "model.hidden=[100,30]",
            "train.eta=interval(0.1,1)",
        ]
    assert study_of(cfg).name == "ch3_eta_lmbda model.hidden=[100,30]"
