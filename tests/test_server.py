"""A team's MLflow tracking server (``make server``), for real: started on 127.0.0.1 in a temp dir, runs
and sweeps logged into it through submitit, MLflow's basic-auth app refusing who it should, and a
server that is not there. The PostgreSQL-backed load test is slow (``make test-full``)."""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient
from servers import createdb, free_port, mlflow_server, postgres

DIGITS = ("data=digits", "train.epochs=2")
SECRET = "s3cret-Pa55word"  # every user's password here: it must appear nowhere it is logged
UNAUTHENTICATED = (
    "401 not authenticated (wrong or missing MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
)


def environment(url: str, user: str | None = None, password: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["MLFLOW_TRACKING_URI"] = url
    if user is not None:
        env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    return env


def runs_on(url: str):
    client = MlflowClient(url)
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_a_submitit_sweep_logs_everything_to_the_server_and_nothing_here(tmp_path, nnexp_run, monkeypatch):
    (tmp_path / "server").mkdir()
    with mlflow_server(tmp_path / "server") as url:
        launched = tmp_path / "launch"
        launched.mkdir()
        result = nnexp_run(
            "-m",
            "hydra/launcher=submitit_local",
            "seed=1,2,3,4",
            *DIGITS,
            env=environment(url),
            cwd=launched,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert not (launched / "mlflow.db").exists() and not (launched / "mlartifacts").exists()

        client, runs = runs_on(url)
        (parent,) = [run for run in runs if run.data.tags.get("nnexp.sweep") == "true"]
        children = [run for run in runs if run is not parent]
        assert parent.info.status == "FINISHED" and len(children) == 4
        downloads = tmp_path / "downloads"
        for run in children:
            assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert [m.step for m in client.get_metric_history(run.info.run_id, "eta")] == [1, 2]
            picture = Path(client.download_artifacts(run.info.run_id, "learning_curves.png", str(downloads)))
            assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for name in ("accuracy.png", "cost.png", "summary.md"):
            assert (
                Path(client.download_artifacts(parent.info.run_id, name, str(downloads))).stat().st_size > 0
            )
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        model = mlflow.pyfunc.load_model(f"runs:/{children[0].info.run_id}/model")  # through the server
        assert model.predict(np.zeros((2, 64))).shape == (2,)


@pytest.fixture
def team(tmp_path, monkeypatch):
    """A basic-auth server whose admin made experiment 'team', owned by alice (she may edit it) and
    readable by bob; yields (url, experiment id). This process talks to it as alice."""
    (tmp_path / "server").mkdir()
    secrets = {
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-flask-secret",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-Pa55word",
    }
    with mlflow_server(tmp_path / "server", auth=secrets) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secrets["MLFLOW_AUTH_ADMIN_PASSWORD"])
        auth = get_app_client("basic-auth", tracking_uri=url)
        experiment = MlflowClient(url).create_experiment("team")
        for user, permission in (("alice", "EDIT"), ("bob", "READ")):
            auth.create_user(user, SECRET)
            auth.grant_user_permission(user, "experiment", experiment, permission)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
        yield url, experiment


@pytest.mark.parametrize(
    "user,password,message",
    [
        (
            None,
            None,
            f"refused an anonymous user (MLFLOW_TRACKING_USERNAME is not set): {UNAUTHENTICATED}",
        ),
        ("alice", "wrong", f"refused user 'alice': {UNAUTHENTICATED}"),
        ("bob", SECRET, "refused user 'bob': 403 permission denied, it may only read experiment 'team'"),
    ],
    ids=["anonymous", "wrong-password", "read-only"],
)
def test_the_server_refuses_in_one_line_and_nothing_is_left(
    tmp_path, nnexp_run, team, user, password, message
):
    url, experiment = team
    here = tmp_path / "here"
    here.mkdir()
    result = nnexp_run(*DIGITS, "tracking.experiment=team", env=environment(url, user, password), cwd=here)
    assert result.returncode == 1
    assert result.stderr.strip() == f"the MLflow server {url} {message}"
    assert list(here.iterdir()) == []  # no store, no outputs
    assert MlflowClient(url).search_runs([experiment]) == []  # nothing on the server either


def test_the_owner_logs_and_no_credential_is_recorded(tmp_path, nnexp_run, team):
    url, experiment = team
    here = tmp_path / "here"
    here.mkdir()
    result = nnexp_run(
        "-m", *DIGITS, "seed=1,2", "tracking.experiment=team", env=environment(url, "alice", SECRET), cwd=here
    )
    assert result.returncode == 0, result.stderr
    client = MlflowClient(url)
    runs = client.search_runs([experiment])
    assert len(runs) == 3 and all(run.info.status == "FINISHED" for run in runs)
    recorded = [result.stdout, result.stderr]
    for run in runs:
        recorded += [str(run.data.params), str(run.data.tags)]
        folder = Path(
            client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts" / run.info.run_id))
        )
        recorded += [path.read_bytes().decode("latin-1") for path in folder.rglob("*") if path.is_file()]
    recorded += [path.read_bytes().decode("latin-1") for path in here.rglob("*") if path.is_file()]
    assert not any(SECRET in text for text in recorded)


class Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_error(500, "the database is down")

    def log_message(self, *args):
        pass


def test_a_server_that_is_not_there_or_fails_stops_the_command_in_seconds(tmp_path, nnexp_run):
    failing = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=failing.serve_forever, daemon=True).start()
    try:
        for url, message in [
            (f"http://127.0.0.1:{free_port()}", "does not answer: cannot connect"),
            (f"http://127.0.0.1:{failing.server_address[1]}", "failed: HTTP 500 the database is down"),
        ]:
            started = time.monotonic()
            result = nnexp_run(*DIGITS, env=environment(url))
            assert time.monotonic() - started < 15  # not MLflow's minutes of retries
            assert result.returncode == 1 and result.stderr.strip() == f"the MLflow server {url} {message}"
            assert list(tmp_path.iterdir()) == []
    finally:
        failing.shutdown()


@pytest.mark.slow
def test_sixteen_runs_eight_at_a_time_into_a_postgresql_backed_server(tmp_path, nnexp_run):
    with postgres() as cluster, mlflow_server(tmp_path, backend=createdb(cluster, "mlflow")) as url:
        launch = ("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=8", "seed=range(0,16)")
        result = nnexp_run(
            *launch, "data=digits", "train.epochs=5", env=environment(url), cwd=tmp_path, timeout=900
        )
        assert result.returncode == 0, result.stderr
        client, runs = runs_on(url)
        (parent,) = [run for run in runs if run.data.tags.get("nnexp.sweep") == "true"]
        children = [run for run in runs if run is not parent]
        assert parent.info.status == "FINISHED" and len(children) == 16
        for run in children:
            assert run.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(run.info.run_id, "validation_accuracy")] == [
                1,
                2,
                3,
                4,
                5,
            ]


@pytest.mark.slow
def test_a_study_in_postgresql_shared_by_two_launches(store, nnexp_run):
    """A search's study in a PostgreSQL database, as several machines would share it."""
    with postgres() as cluster:
        storage = createdb(cluster, "optuna")
        study = ("-m", "search=ch3_eta_lmbda", *DIGITS, f"hydra.sweeper.storage={storage}")
        assert nnexp_run(*study, "hydra.sweeper.n_trials=3", timeout=600).returncode == 0
        assert nnexp_run(*study, "hydra.sweeper.n_trials=5", timeout=600).returncode == 0
        import optuna

        name = "ch3_eta_lmbda data=digits train.epochs=2"
        assert [t.number for t in optuna.load_study(study_name=name, storage=storage).trials] == list(
            range(5)
        )
