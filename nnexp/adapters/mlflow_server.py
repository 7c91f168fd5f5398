"""``mlflow server`` that becomes its web server: checked against MLflow 3.17.2 (pinned
``mlflow[auth]==3.17.2``).

MLflow's command sets up the store and the environment, then starts uvicorn (or gunicorn) as a child
through ``mlflow.server._exec_cmd`` (its private import of ``mlflow.utils.process._exec_cmd``) and waits
for it, holding 290 MB of imports for nothing. Replacing that name makes the command's process the web
server itself: with one worker (the UI), uvicorn serves in this process, whose imports are most of what
the app needs (seconds sooner than a new interpreter); with several, this process becomes uvicorn's
supervisor by ``os.execve``, a fresh interpreter that holds none of MLflow, its workers the rest. Should
a later MLflow start its server another way, the server still works, only that process is back (the
memory test of ``make server`` notices).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

UVICORN = ["-m", "uvicorn"]  # after the interpreter, in MLflow's command for uvicorn


def serve_in_place(mlflow_args: Sequence[str]) -> None:
    """Run ``mlflow server MLFLOW_ARGS`` in this process, which then becomes the web server."""
    import mlflow.server  # MLflow: only the server's own process loads it
    from mlflow.cli import cli

    def become(command: list[str], *, extra_env: dict[str, str], **_) -> None:
        command = [str(part) for part in command]
        os.environ.update(extra_env)
        sys.stdout.flush()
        sys.stderr.flush()
        if command[1:3] == UVICORN and command[command.index("--workers") + 1] == "1":
            from uvicorn.main import main as uvicorn  # uvicorn: only the UI's process loads it

            uvicorn.main(command[3:], prog_name="uvicorn")  # serves until stopped, then exits
        os.execve(command[0], command, dict(os.environ))

    mlflow.server._exec_cmd = become
    cli.main(["server", *mlflow_args], prog_name="mlflow")
