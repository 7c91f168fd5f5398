"""``mlflow server`` that becomes its web server: checked against MLflow 3.17.2 (pinned
``mlflow[auth]==3.17.2``).

MLflow's command sets up the store and the environment, then starts uvicorn (or gunicorn) as a child
through ``mlflow.server._exec_cmd`` (its private import of ``mlflow.utils.process._exec_cmd``) and waits
for it, holding 290 MB of imports for nothing. Replacing that name with an ``os.execve`` makes the
command's process the web server itself. Should a later MLflow start its server another way, the server
still works, only that process is back (the memory test of ``make server`` notices).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def serve_in_place(mlflow_args: Sequence[str]) -> None:
    """Run ``mlflow server MLFLOW_ARGS`` in this process, which then becomes the web server."""
    import mlflow.server  # MLflow: only the server's own process loads it
    from mlflow.cli import cli

    def become(command: list[str], *, extra_env: dict[str, str], **_) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(command[0], [str(part) for part in command], {**os.environ, **extra_env})

    mlflow.server._exec_cmd = become
    cli.main(["server", *mlflow_args], prog_name="mlflow")
