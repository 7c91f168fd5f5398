"""A team's MLflow tracking server (``make server``) and the UI (``make ui``), for real: started on
127.0.0.1 in a temp dir, what they hold and how they stop (real signals, every process of the tree
watched), runs and sweeps logged into it through submitit, MLflow's basic-auth app refusing who it
should, and a server that is not there. The PostgreSQL-backed load test is slow (``make test-full``)."""

from __future__ import annotations

import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient
from servers import Launched, createdb, descendants, free_port, mlflow_server, postgres, resident, running

DIGITS = ("data=digits", "train.epochs=2")
SECRET = "s3cret-Pa55word"  # every user's password here: it must appear nowhere it is logged
UNAUTHENTICATED = (
    "401 not authenticated (wrong or missing MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
)
STOP_SECONDS = 5  # what `make server` promises
RESIDENT_MB = 800  # the server with its two workers, every process counted
UI_RESIDENT_MB = 400  # the UI: the launcher and one web server
ACCESS_LINE = re.compile(r'[\d/]+ [\d:]+ 127\.0\.0\.1:\d+ - "[A-Z]+ \S+ HTTP/1\.1" \d{3}( .*)?')


def environment(url: str, user: str | None = None, password: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["MLFLOW_TRACKING_URI"] = url
    if user is not None:
        env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    return env


def runs_on(url: str):
    client = MlflowClient(url)
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One ``python -m nnexp.server --workers 2 --access-log`` on a new store, answering, shared by the
    tests that only look at it."""
    server = Launched(tmp_path_factory.mktemp("served"), "--workers", "2", "--access-log")
    try:
        server.answers()
        yield server
    finally:
        server.stop()


@pytest.mark.xdist_group(name="served")  # one worker starts the module's server
def test_the_server_holds_at_most_800_mb(served):
    """(How soon it answers is a speed target: ``make bench-harness ARGS=server_start``.)"""
    experiment = MlflowClient(served.url).create_experiment("held")
    assert MlflowClient(served.url).get_experiment_by_name("held").experiment_id == experiment
    tree = descendants(served.process.pid)
    megabytes = resident(tree) / 2**20
    assert megabytes <= RESIDENT_MB, f"{len(tree)} processes hold {megabytes:.0f} MB"


@pytest.mark.xdist_group(name="served")  # one worker starts the module's server
def test_asked_for_an_access_log_the_server_logs_each_request_and_nothing_more(served):
    requests.get(f"{served.url}/health", timeout=5)
    wait_for_text(lambda: served.output()[0], '"GET /health HTTP/1.1" 200')
    out, err = served.output()
    banner, *logged = out.splitlines()
    assert banner.startswith(f"MLflow tracking server at {served.url} ")
    assert all(ACCESS_LINE.fullmatch(line) for line in logged), logged
    assert "INFO" not in err  # neither MLflow's start-up lines nor uvicorn's


def wait_for_text(read, text: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while text not in read():
        assert time.monotonic() < deadline, f"{text!r} not in {read()!r}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "args,processes,ctrl_c",
    [
        # each a server started and stopped, seconds of CPU: SIGTERM, as a scheduler stops it, in test-full
        pytest.param(
            ("--workers", "2"), 4, False, id="make server, SIGTERM to the launcher", marks=pytest.mark.slow
        ),
        pytest.param(("--workers", "2"), 4, True, id="make server, Ctrl-C"),
        pytest.param(("ui",), 2, True, id="make ui, Ctrl-C"),
    ],
)
def test_a_stop_ends_every_process_within_5_s_in_one_line(tmp_path, args, processes, ctrl_c):
    server = Launched(tmp_path, *args)
    try:
        server.answers()
        requests.get(f"{server.url}/health", timeout=5)
        tree = descendants(server.process.pid)
        assert len(tree) >= processes  # the launcher, uvicorn (and its workers)
        out, err = server.output()
        if ctrl_c:
            os.killpg(server.process.pid, signal.SIGINT)  # the terminal's foreground group
        else:
            server.process.send_signal(signal.SIGTERM)
        assert running(tree, seconds=STOP_SECONDS) == []
        assert server.process.wait() == 0
        stopped_out, stopped_err = server.output()
        assert "GET /health" not in stopped_out  # no access log unless asked
        assert "Traceback" not in stopped_err
        assert len((stopped_out + stopped_err).splitlines()) - len((out + err).splitlines()) <= 1
    finally:
        server.stop()


def test_ui_prints_the_runs_table_url_first_serves_the_store_and_dies_with_its_launcher(tmp_path):
    """``make ui`` is the launcher and one web server, nothing else: MLflow's GenAI job runner and its
    huey consumers (16 processes in all) stay off."""
    experiment = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("nnexp")
    ui = Launched(tmp_path, "ui")
    try:
        ui.answers()
        tree = descendants(ui.process.pid)
        megabytes = resident(tree) / 2**20
        assert len(tree) == 2 and megabytes <= UI_RESIDENT_MB, (
            f"{len(tree)} processes hold {megabytes:.0f} MB"
        )
        first = ui.output()[0].splitlines()[0]
        assert first == f"{ui.url}/#/experiments/{experiment}/runs?workflowType=machine_learning"
        found = requests.get(
            f"{ui.url}/ajax-api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": "nnexp"},
            timeout=5,
        )
        assert found.json()["experiment"]["experiment_id"] == experiment
        ui.process.kill()
        assert running(tree, seconds=STOP_SECONDS) == []
    finally:
        ui.stop()


def test_url_in_an_empty_directory_prints_the_experiments_page_and_creates_no_store(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    printed = subprocess.run(
        [sys.executable, "-m", "nnexp.server", "url"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == "http://127.0.0.1:5000/#/experiments\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """A basic-auth server whose admin made experiment 'team', owned by alice (she may edit it) and
    readable by bob; (url, experiment id). One for the module: each start costs seconds."""
    folder = tmp_path_factory.mktemp("team") / "server"
    folder.mkdir()
    secrets = {
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-flask-secret",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-Pa55word",
    }
    with mlflow_server(folder, auth=secrets) as url:
        with pytest.MonkeyPatch.context() as admin:
            admin.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            admin.setenv("MLFLOW_TRACKING_PASSWORD", secrets["MLFLOW_AUTH_ADMIN_PASSWORD"])
            auth = get_app_client("basic-auth", tracking_uri=url)
            experiment = MlflowClient(url).create_experiment("team")
            for user, permission in (("alice", "EDIT"), ("bob", "READ")):
                auth.create_user(user, SECRET)
                auth.grant_user_permission(user, "experiment", experiment, permission)
        yield url, experiment


@pytest.fixture
def team(team_server, monkeypatch):
    """The team's server, this process talking to it as alice."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    return team_server


@pytest.mark.xdist_group(name="team")  # one worker starts the module's server
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
    before = MlflowClient(url).search_runs([experiment])
    result = nnexp_run(*DIGITS, "tracking.experiment=team", env=environment(url, user, password), cwd=here)
    assert result.returncode == 1
    assert result.stderr.strip() == f"the MLflow server {url} {message}"
    assert list(here.iterdir()) == []  # no store, no outputs
    assert MlflowClient(url).search_runs([experiment]) == before  # nothing on the server either


@pytest.mark.xdist_group(name="team")  # one worker starts the module's server
def test_the_owner_logs_and_no_credential_is_recorded(tmp_path, nnexp_command, team):
    url, experiment = team
    here = tmp_path / "here"
    here.mkdir()
    before = {run.info.run_id for run in MlflowClient(url).search_runs([experiment])}
    result = nnexp_command(  # a sweep of one job, one epoch: the auth app checks a password hash per request
        "-m",
        "data=digits",
        "train.epochs=1",
        "seed=1",
        "tracking.experiment=team",
        env=environment(url, "alice", SECRET),
        cwd=here,
    )
    assert result.returncode == 0, result.stderr
    client = MlflowClient(url)
    runs = [run for run in client.search_runs([experiment]) if run.info.run_id not in before]
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)  # the sweep and its job
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
