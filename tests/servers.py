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


class Launched:
    """``python -m nnexp.server *args --port <a free port>`` started in ``folder`` (away from any
    $MLFLOW_TRACKING_URI), in a session of its own as a shell starts a job, so that a test can Ctrl-C its
    process group; its output in ``folder``/stdout and stderr."""

    def __init__(self, folder: Path, *args: str, env: dict[str, str] | None = None):
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **(env or {})}
        env.pop("MLFLOW_TRACKING_URI", None)
        command = [sys.executable, "-m", "nnexp.server", *args, "--port", str(self.port)]
        self.started, self.answered_after = time.monotonic(), None
        with (folder / "stdout").open("w") as out, (folder / "stderr").open("w") as err:
            self.process = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=err,
                                            start_new_session=True)  # fmt: skip

    def answers(self, seconds: float = 90.0) -> float:
        """Seconds from the start until the server answered ``/health`` (kept as ``answered_after``)."""

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server ended ({self.process.returncode}): {self.output()[1]}")
            return requests.get(f"{self.url}/health", timeout=1).ok

        wait_for(up, f"the server at {self.url}", seconds)
        self.answered_after = time.monotonic() - self.started
        return self.answered_after

    def output(self) -> tuple[str, str]:
        return (self.folder / "stdout").read_text(), (self.folder / "stderr").read_text()

    def stop(self) -> None:
        """SIGTERM to the launcher; SIGKILL to whatever of its tree still runs 30 s later."""
        tree = descendants(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        for pid in running(tree, seconds=30):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def mlflow_server(
    folder: Path, backend: str | None = None, auth: dict[str, str] | None = None, workers: int = 1
) -> Iterator[str]:
    """``python -m nnexp.server`` in ``folder`` (its sqlite store there unless ``backend`` says), with
    MLflow's basic-auth app when ``auth`` gives its secrets; yields its URL once it answers."""
    args = ["--workers", str(workers)]
    args += ["--backend-store-uri", backend] if backend else []
    args += ["--auth"] if auth else []
    server = Launched(folder, *args, env=auth)
    try:
        server.answers()
        yield server.url
    finally:
        server.stop()


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    tree = [pid]
    for each in tree:  # the list grows as the loop goes: breadth first
        tree += children.get(each, [])
    return tree


def group(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` that have not ended (zombies have), read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                members.append(int(stat.parent.name))
    return members


def resident(pids: list[int]) -> int:
    """The bytes these processes hold in memory (VmRSS), summed."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            sizes = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
            total += int(sizes[0]) * 1024 if sizes else 0  # a zombie holds none
    return total


def running(pids: list[int], seconds: float = 0.0) -> list[int]:
    """Those of ``pids`` still running after waiting up to ``seconds`` for them to end (zombies have)."""

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + seconds
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


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
