"""Real servers on 127.0.0.1 for the tests and the benchmark: MLflow's tracking server (``python -m
nnexp.server``, as ``make server`` starts it) and a throwaway PostgreSQL cluster."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

POSTGRES = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(
    folder: Path, backend: str | None = None, auth: dict[str, str] | None = None, workers: int = 1
) -> Iterator[str]:
    """``python -m nnexp.server`` in ``folder`` (its sqlite store there unless ``backend`` says), with
    MLflow's basic-auth app when ``auth`` gives its secrets; yields its URL once it answers."""
    port = free_port()
    args = ["--port", str(port), "--workers", str(workers)]
    args += ["--backend-store-uri", backend] if backend else []
    args += ["--auth"] if auth else []
    env = {**os.environ, **(auth or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (folder / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "nnexp.server", *args], cwd=folder, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/health", timeout=1).ok, what=f"the MLflow server at {url}")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def wait_for(ready, what: str, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException, OSError):
            if ready():
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not start within {seconds:.0f} s")


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL 15 cluster in a temporary directory, listening on 127.0.0.1 only, trusting local
    connections; yields the URL of its ``postgres`` database (``createdb`` more as needed)."""
    folder = Path(tempfile.mkdtemp(prefix="nnexp-postgres-"))
    shutil.chown(folder, "postgres")
    port = free_port()
    data = folder / "data"

    def as_postgres(*command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, cwd=folder
        )

    try:
        as_postgres(str(POSTGRES / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
        as_postgres(
            str(POSTGRES / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"
        )
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            as_postgres(str(POSTGRES / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def createdb(url: str, name: str) -> str:
    """A new database in the cluster at ``url``; its URL."""
    import psycopg

    with psycopg.connect(f"{url}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"{url}/{name}"
