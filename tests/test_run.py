"""``python -m nnexp.run`` end to end: real Hydra, a real sqlite MLflow store in a temp dir."""

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from nnexp import report, run
from nnexp.engine import Network, data

SMOKE = ("data.train_size=1000", "train.epochs=2")
EPOCH_KEYS = {
    "train_cost",
    "train_accuracy",
    "validation_cost",
    "validation_accuracy",
    "test_cost",
    "test_accuracy",
    "epoch_seconds",
    "eta",
}


def all_runs(uri):
    client = MlflowClient(uri)
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize(
    "args,key",
    [
        (["cost=quadratik"], "cost"),
        (["train.eta=0"], "train.eta"),
        (["train.batch_size=0"], "train.batch_size"),
        (["train.epochs=abc"], "train.epochs"),
        (["model.hidden=[30,0]"], "model.hidden"),
        (["data.train_size=50001"], "data.train_size"),
        (["regularization.lmbda=-1"], "regularization.lmbda"),
        (["regularization=dropout", "regularization.p=1"], "regularization.p"),
        (["experiment=nope"], "experiment"),
        (["train.etaa=1"], "train.etaa"),
        (["-m", "train.eta=0.1,0"], "train.eta"),
        (["-m", "hydra/launcher=joblib", "cost=quadratic,cubic"], "cost"),
        (["-m", "train.eta=choice(0.1,0)"], "train.eta"),
        (["-m", "train.eta=range(0,1,0.5)"], "train.eta"),
        (["-m", "train.eta=interval(0.1,1)"], "train.eta"),
        (["-m", "train.eta=choice(0.1"], "train.eta"),
        (["train=3"], "train=3: accepted one key at a time: train.eta, "),
        (["search=ch3_eta_lmbda"], "with -m: python -m nnexp.run -m search=ch3_eta_lmbda"),
        (["trial=3"], "invalid trial=3: accepted null; a search sets it"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(tmp_path, nnexp_command, args, key):
    result = nnexp_command(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no outputs/ or multirun/


@pytest.mark.mnist
def test_run_logs_metrics_params_tags_and_artifacts(tmp_path, store, nnexp_command, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    result = nnexp_command(*SMOKE, "train.eta=1.0")  # the store rule: ./mlflow.db ...
    assert result.returncode == 0, result.stderr
    client, (run,) = all_runs(store)  # ... which is where the fixture points this process
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "nnexp"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert [line.split(" | ")[1][:10] for line in result.stdout.splitlines() if " | " in line] == [
        "epoch 1/2 ",
        "epoch 2/2 ",
    ]  # not a TTY: one plain line per epoch
    best = run.data.metrics["best_validation_accuracy"]
    assert result.stdout.splitlines()[-2:] == [  # its id, how it ended, where to see it, what next
        f"run {run.info.run_id} FINISHED, best validation accuracy {best:.2%} "
        f"(epoch {int(run.data.metrics['best_epoch'])}): "
        f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning",
        f"report: python -m nnexp.report --runs {run.info.run_id}",
    ]
    (output_dir,) = tmp_path.glob("outputs/*/*")  # Hydra's record of the job alone: the rest is in the store
    assert [path.name for path in output_dir.iterdir()] == [".hydra"]

    assert run.info.status == "FINISHED"
    assert run.info.run_name == "data.train_size=1000 train.epochs=2 train.eta=1.0 seed=0"
    tags = run.data.tags
    assert tags["nnexp.overrides"] == "data.train_size=1000 train.epochs=2 train.eta=1.0"
    assert (tags["nnexp.sweep_id"], tags["nnexp.job"], tags["nnexp.seed"]) == ("", "0", "0")
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["nnexp.git_dirty"] in ("true", "false")
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("nnexp/run.py", "LOCAL")
    params = run.data.params
    assert (params["train.eta"], params["model.hidden"], params["seed"]) == ("1.0", "[30]", "0")
    for key in EPOCH_KEYS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2]
    metrics = run.data.metrics
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] in (1, 2) and metrics["wall_seconds"] > 0
    assert metrics["best_validation_accuracy"] >= metrics["final_validation_accuracy"] > 0.5

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts >= {
        "config.yaml",
        "metrics.csv",
        "learning_curves.png",
        "network.npz",
        ".hydra",
        "checkpoint",
    }
    local = tmp_path / "download"
    local.mkdir()
    csv = pd.read_csv(client.download_artifacts(run.info.run_id, "metrics.csv", str(local)))
    assert list(csv["epoch"]) == [1, 2] and EPOCH_KEYS <= set(csv.columns)

    test = data.load("mnist", train_size=10).test
    net = Network.load(client.download_artifacts(run.info.run_id, "network.npz", str(local)))
    assert net.evaluate(test.X, test.y, 1000)[1] == pytest.approx(metrics["final_test_accuracy"])
    (dataset,) = run.inputs.dataset_inputs  # the runs table's Dataset column
    assert dataset.dataset.name == "mnist train_size=1000" and len(dataset.dataset.digest) == 12
    assert json.loads(dataset.dataset.profile) == {"train": 1000, "validation": 10000, "test": 10000}
    (output,) = run.outputs.model_outputs  # ... and its Models column: a logged model of the run
    for uri in (f"models:/{output.model_id}", f"runs:/{run.info.run_id}/model"):
        model = mlflow.pyfunc.load_model(uri)
        digits = model.predict(test.X[:100])
        assert digits.shape == (100,) and set(digits) <= set(range(10))
        assert np.array_equal(digits, net.predict(test.X[:100]))
        assert model.metadata.signature is not None
        for images in (test.X[:5].astype(np.float64), pd.DataFrame(test.X[:5])):  # what users pass
            assert np.array_equal(np.asarray(model.predict(images)).ravel(), digits[:5])


def test_same_config_and_seed_give_identical_histories(store, nnexp_command):
    result = nnexp_command("-m", "data=digits", *SMOKE, "seed=3,3")
    assert result.returncode == 0, result.stderr
    client, runs = all_runs(store)
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    histories = [
        [
            (m.step, m.value)
            for key in sorted(EPOCH_KEYS - {"epoch_seconds"})
            for m in client.get_metric_history(run.info.run_id, key)
        ]
        for run in children
    ]
    assert len(histories) == 2 and len(histories[0]) == 2 * 7
    assert histories[0] == histories[1]


@pytest.mark.mnist
@pytest.mark.parametrize(
    "stop, status, reason",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_or_sigterm_ends_the_run_killed_in_two_lines_that_say_how_to_resume_it(
    tmp_path, store, interruptible, stop, status, reason
):
    """SIGTERM (``kill``, a scheduler) as Ctrl-C: Python's default would die leaving the run RUNNING."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nnexp.run", "train.epochs=30"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    assert "epoch 1/30" in process.stdout.readline()
    process.send_signal(stop)
    out, err = process.communicate(timeout=60)
    assert process.returncode == status  # 128 + the signal, as shells say
    _, (run,) = all_runs(store)
    assert run.info.status == "KILLED" and run.data.tags["failure_reason"] == reason
    run_id, epochs = run.info.run_id, len(MlflowClient(store).get_metric_history(run.info.run_id, "eta"))
    assert "Traceback" not in err and all(" | epoch " in line for line in out.splitlines())
    assert err.splitlines() == [
        f"run {run_id} KILLED after epoch {epochs} of 30: "
        f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs?workflowType=machine_learning",
        f"resume: python -m nnexp.run resume={run_id}",
    ]


def test_missing_data_is_one_line_and_creates_no_run(tmp_path, nnexp_command):
    result = nnexp_command(*SMOKE, env={"NNEXP_DATA_DIR": str(tmp_path / "none")})
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()  # and not Hydra's "Error executing job ..." before it
    assert line.startswith("NNEXP_DATA_DIR=")
    assert not (tmp_path / "mlflow.db").exists()


def test_main_returns_the_objective_and_the_history(tmp_path, store, composer):
    """What a sweeper receives from a job: the best validation accuracy, never a test figure."""
    cfg = composer("data=digits", "train.epochs=3")
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir, cfg.hydra.runtime.cwd = str(tmp_path / "out"), str(tmp_path)
        cfg.hydra.mode = RunMode.RUN
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as Hydra hands the config to the task
    result = run.main.__wrapped__(cfg)
    client, (logged,) = all_runs(store)
    assert (result.run_id, result.status) == (logged.info.run_id, "FINISHED")
    assert [m["epoch"] for m in result.history] == [1, 2, 3]
    assert result.objective == max(m["validation_accuracy"] for m in result.history)
    assert result.objective == logged.data.metrics["best_validation_accuracy"]
    assert result.objective != logged.data.metrics["best_test_accuracy"]


def test_a_diverging_run_ends_failed_and_exits_non_zero(store, nnexp_command):
    result = nnexp_command("data=digits", "activation=relu", "init=large", "train.eta=1000", "train.epochs=2")
    assert result.returncode == 1
    assert "FAILED, diverged: " in result.stderr
    _, (run,) = all_runs(store)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"].startswith("diverged: ")


@pytest.mark.parametrize("damage", ["garbage", "directory", "foreign"])
def test_a_corrupt_or_unreadable_store_is_named_in_one_line(tmp_path, store, nnexp_command, capfd, damage):
    path = tmp_path / "mlflow.db"
    path.unlink()  # the fixture's store, replaced by the damage
    if damage == "garbage":
        path.write_bytes(b"this is no sqlite database, nor anything else" * 100)
    elif damage == "directory":
        path.mkdir()
    else:  # a sqlite database, but not MLflow's
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("create table notes (text)")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = nnexp_command("data=digits")
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and str(path) in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert report.main([]) == 1
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert str(path) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before
