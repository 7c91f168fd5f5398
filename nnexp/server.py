"""MLflow's server for nnexp: the team's tracking server (``make server``) and the UI on this directory's
store (``make ui``).

    python -m nnexp.server                                            # ./server/mlflow.db, port 5000
    python -m nnexp.server --backend-store-uri postgresql://mlflow@db.example/mlflow --port 5001
    python -m nnexp.server --access-log                               # a line for each HTTP request
    MLFLOW_FLASK_SERVER_SECRET_KEY=... MLFLOW_AUTH_ADMIN_PASSWORD=... python -m nnexp.server --auth
    python -m nnexp.server ui [EXPERIMENT]   # the runs-table URL of this directory's store, then the UI
    python -m nnexp.server url [EXPERIMENT]  # only the URL (never creates a store)

The tracking server is bound to 127.0.0.1 unless told otherwise, serves artifacts itself
(``--artifacts-destination``) so that jobs on other machines need no shared file system, keeps its runs
in sqlite by default or in PostgreSQL, and optionally runs MLflow's basic-auth app. Jobs point at it
with ``MLFLOW_TRACKING_URI=http://<host>:<port>``.

Only what nnexp uses is started: MLflow's GenAI job runner and its seven huey consumers (over 1 GB)
stay off, and MLflow's command, which would otherwise wait beside the web server holding its
290 MB of imports, becomes the web server itself. What is left is uvicorn and its workers, in a process
group of their own that this process watches: Ctrl-C or SIGTERM stops the whole group within seconds,
and if this process is killed outright the kernel stops the server too (Linux only, as the rest of
this supervision: ``prctl(PR_SET_PDEATHSIG)``, ``sigwaitinfo``).

The launching process never imports MLflow (it would hold 200 MB for as long as the server runs):
what needs MLflow runs in the child, before the child becomes the server
(``nnexp.adapters.mlflow_server``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from nnexp.adapters.mlflow_server import serve_in_place
from nnexp.store import HOST, PORT, local_path, runs_url, shown, store_uri

FOLDER = Path("server")  # the tracking server's files, in the directory it is started in
EXPERIMENT = "nnexp"  # the config's tracking.experiment
AUTH_SECRETS = ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD")
STOP_SECONDS = 3.0  # how long the server may take to stop before it is killed (5 s promised in all)
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Every uvicorn worker warns about a module MLflow imports; nothing a user can act on.
STARLETTE_WARNING = "ignore:starlette.middleware.wsgi is deprecated"
DATES = "%Y/%m/%d %H:%M:%S"  # as in MLflow's log lines


def auth_config(folder: Path) -> Path:
    """The basic-auth app's settings (``MLFLOW_AUTH_CONFIG_PATH``): its user database beside the server's
    files, and READ as what a user may do in an experiment nobody gave them rights to. The admin's
    password is not written here: the app reads it from ``MLFLOW_AUTH_ADMIN_PASSWORD``."""
    path = folder / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{(folder / 'basic_auth.db').resolve()}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return path


def access_log_config(folder: Path) -> Path:
    """uvicorn's logging (``--log-config``): the access log alone, none of uvicorn's own INFO lines,
    which its ``--log-level`` could only silence with the access log."""
    formats = {
        "default": {
            "()": "uvicorn.logging.DefaultFormatter",
            "fmt": "%(asctime)s %(levelprefix)s %(message)s",
            "datefmt": DATES,
        },
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(asctime)s %(client_addr)s - "%(request_line)s" %(status_code)s',
            "datefmt": DATES,
        },
    }
    streams = {"default": "ext://sys.stderr", "access": "ext://sys.stdout"}
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": formats,
        "handlers": {
            name: {"formatter": name, "class": "logging.StreamHandler", "stream": stream}
            for name, stream in streams.items()
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "WARNING"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
    path = folder / "uvicorn_logging.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nnexp.server",
        description="The team's MLflow tracking server.",
        epilog="python -m nnexp.server {ui,url} [EXPERIMENT]: the MLflow UI on this directory's store.",
    )
    parser.add_argument(
        "--backend-store-uri",
        default=f"sqlite:///{(FOLDER / 'mlflow.db').resolve()}",
        help="where runs are recorded: a sqlite file (default ./server/mlflow.db) or a "
        "PostgreSQL URL (postgresql://user@host/database, the password in PGPASSWORD or ~/.pgpass)",
    )
    parser.add_argument(
        "--artifacts-destination",
        default=str(FOLDER / "artifacts"),
        help="where the server keeps artifacts (default ./server/artifacts)",
    )
    parser.add_argument(
        "--host", default=HOST, help=f"the interface to bind (default {HOST}: this machine only)"
    )
    parser.add_argument("--port", type=int, default=PORT, help=f"default {PORT}")
    parser.add_argument("--workers", type=int, default=2, help="server processes (default 2)")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="MLflow's basic-auth app: users, passwords, "
        "per-experiment permissions (needs " + " and ".join(AUTH_SECRETS) + ")",
    )
    parser.add_argument("--access-log", action="store_true", help="a line on stdout for each HTTP request")
    return parser


def ui_parser(command: str) -> argparse.ArgumentParser:
    what = "Print the runs-table URL of this directory's store ($MLFLOW_TRACKING_URI, else ./mlflow.db)"
    then = {"url": ".", "ui": ", then serve the store in MLflow's UI."}[command]
    parser = argparse.ArgumentParser(prog=f"python -m nnexp.server {command}", description=what + then)
    parser.add_argument("experiment", nargs="?", default=EXPERIMENT, help=f"default {EXPERIMENT}")
    parser.add_argument("--port", type=int, default=PORT, help=f"the UI's (default {PORT})")
    return parser


def uvicorn_options(log_config: Path | None) -> list[str]:
    """MLflow's ``--uvicorn-opts``: uvicorn's logging from ``log_config``, or none but its warnings."""
    if log_config is None:
        return ["--uvicorn-opts", "--no-access-log --log-level warning"]
    return ["--uvicorn-opts", f"--log-config {shlex.quote(str(log_config.resolve()))}"]


def mlflow_arguments(args: argparse.Namespace, log_config: Path | None) -> list[str]:
    """The ``mlflow server`` arguments for these settings, uvicorn logging as ``log_config`` says."""
    line = [
        "--backend-store-uri",
        args.backend_store_uri,
        "--registry-store-uri",  # MLflow's default too, said here so that it does not announce it
        args.backend_store_uri,
        "--artifacts-destination",
        str(Path(args.artifacts_destination).resolve()),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        str(args.workers),
        *uvicorn_options(log_config),
    ]
    if args.auth:
        line += ["--app-name", "basic-auth"]
    return line


def runs_page(experiment: str, port: int) -> str:
    """The runs-table URL of ``experiment`` in this directory's store, as the UI on ``port`` shows it, or
    the experiments list while the store or the experiment does not exist. Never creates a store."""
    from mlflow.tracking import MlflowClient  # MLflow: only in the child, which becomes the server

    uri, ui = store_uri(), f"http://{HOST}:{port}"
    path = local_path(uri)
    missing = path is not None and not path.exists()
    found = None if missing else MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    return runs_url(found.experiment_id, ui) if found is not None else f"{ui}/#/experiments"


def tracking_server(*argv: str) -> None:
    """The child of ``python -m nnexp.server ARGV``: announces the server, then becomes it."""
    args = server_parser().parse_args(argv)
    url = f"http://{args.host}:{args.port}"
    print(
        f"MLflow tracking server at {url} (runs: {shown(args.backend_store_uri)}; artifacts: "
        f"{args.artifacts_destination}); point jobs at it: export MLFLOW_TRACKING_URI={url}",
        flush=True,
    )
    serve_in_place(mlflow_arguments(args, access_log_config(FOLDER) if args.access_log else None))


def ui_server(experiment: str, port: str) -> None:
    """The child of ``python -m nnexp.server ui``: prints the runs-table URL, then serves the store with
    one worker, enough for one person."""
    print(runs_page(experiment, int(port)), flush=True)
    uri = store_uri()
    mlflow_args = ["--backend-store-uri", uri, "--registry-store-uri", uri, "--host", HOST]
    serve_in_place([*mlflow_args, "--port", port, "--workers", "1", *uvicorn_options(log_config=None)])


def child(function: Callable[..., None], *args: str) -> list[str]:
    """The command line of a new interpreter that runs ``function(*args)`` from this module."""
    code = f"import sys, nnexp.server as server; server.{function.__name__}(*sys.argv[1:])"
    return [sys.executable, "-c", code, *args]


def child_environment() -> dict[str, str]:
    """This environment, with MLflow's GenAI job execution off and its INFO start-up lines hidden (unless
    ``MLFLOW_LOGGING_LEVEL`` says otherwise)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), STARLETTE_WARNING]))
    return env


def child_setup(watched: set[signal.Signals]) -> Callable[[], None]:
    """What the child does between fork and exec: take back the signals this process waits for, and ask
    the kernel for SIGTERM when this process dies (a SIGKILL leaves it no chance to stop the server)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # died before the request took effect
            os._exit(1)

    return setup


def running(group: int) -> bool:
    """Whether a process of ``group`` still runs. Zombies do not count: init reaps them in its own time,
    which here can be seconds."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == group and state != "Z":
                return True
    return False


def stop(group: subprocess.Popen) -> None:
    """Stop every process of ``group``'s process group: SIGTERM, then SIGKILL to what is left after
    STOP_SECONDS. SIGTERM also for Ctrl-C: a process still importing would print KeyboardInterrupt's
    traceback."""
    deadline = time.monotonic() + STOP_SECONDS
    with contextlib.suppress(ProcessLookupError):  # the group may have ended already
        os.killpg(group.pid, signal.SIGTERM)
        while running(group.pid):
            if time.monotonic() > deadline:
                os.killpg(group.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    group.wait()


def supervise(command: list[str]) -> int:
    """Run ``command`` in a process group of its own until it ends or this process is asked to stop
    (SIGINT, as Ctrl-C sends to the foreground group, or SIGTERM), then stop its group. The exit status:
    0 after a requested stop, else the command's (128 + the signal if a signal ended it). SIGINT and
    SIGTERM stay blocked after it: it is for a process that ends with it, where a second Ctrl-C during
    the stop is then ignored rather than a traceback."""
    watched = STOP_SIGNALS | {signal.SIGCHLD}
    # Blocked and waited for rather than handled, so no signal can interrupt this process mid-step.
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    server = subprocess.Popen(
        command, env=child_environment(), process_group=0, preexec_fn=child_setup(watched)
    )
    requested = None
    while requested is None and server.poll() is None:
        received = signal.sigwaitinfo(watched).si_signo
        requested = received if received in STOP_SIGNALS else None
    stop(server)
    if requested is not None:
        print(f"MLflow server stopped ({signal.Signals(requested).name})", file=sys.stderr)
        return 0
    return server.returncode if server.returncode >= 0 else 128 - server.returncode


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["url"], ["ui"]):
        args = ui_parser(argv[0]).parse_args(argv[1:])
        if argv[0] == "url":
            print(runs_page(args.experiment, args.port))
            return 0
        return supervise(child(ui_server, args.experiment, str(args.port)))
    args = server_parser().parse_args(argv)
    missing = [name for name in AUTH_SECRETS if args.auth and not os.environ.get(name)]
    if missing:
        print(
            f"nnexp.server: error: --auth needs {' and '.join(missing)} in the environment", file=sys.stderr
        )
        return 2
    FOLDER.mkdir(exist_ok=True)
    if args.auth:
        os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config(FOLDER).resolve())
    return supervise(child(tracking_server, *argv))


if __name__ == "__main__":
    sys.exit(main())
