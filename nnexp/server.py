"""The team's MLflow tracking server: ``make server`` (``python -m nnexp.server``).

MLflow's own tracking server, started with what a team needs: bound to 127.0.0.1 unless told
otherwise, serving artifacts itself (``--artifacts-destination``) so that jobs on other machines need
no shared file system, a sqlite backend by default or a PostgreSQL URL, and optionally MLflow's
basic-auth app. Jobs point at it with ``MLFLOW_TRACKING_URI=http://<host>:<port>``.

    python -m nnexp.server                                            # ./server/mlflow.db, port 5000
    python -m nnexp.server --backend-store-uri postgresql://mlflow@db.example/mlflow --port 5001
    MLFLOW_FLASK_SERVER_SECRET_KEY=... MLFLOW_AUTH_ADMIN_PASSWORD=... python -m nnexp.server --auth
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nnexp.store import HOST, PORT, shown

AUTH_SECRETS = ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD")


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


def command(args: argparse.Namespace) -> list[str]:
    """The ``mlflow server`` command line for these settings."""
    line = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        args.backend_store_uri,
        "--artifacts-destination",
        str(Path(args.artifacts_destination).resolve()),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        str(args.workers),
    ]
    if args.auth:
        line += ["--app-name", "basic-auth"]
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnexp.server", description=__doc__.splitlines()[0])
    folder = Path("server")
    parser.add_argument(
        "--backend-store-uri",
        default=f"sqlite:///{(folder / 'mlflow.db').resolve()}",
        help="where runs are recorded: a sqlite file (default ./server/mlflow.db) or a "
        "PostgreSQL URL (postgresql://user@host/database, the password in PGPASSWORD or ~/.pgpass)",
    )
    parser.add_argument(
        "--artifacts-destination",
        default=str(folder / "artifacts"),
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
    args = parser.parse_args(argv)
    missing = [name for name in AUTH_SECRETS if args.auth and not os.environ.get(name)]
    if missing:
        print(
            f"nnexp.server: error: --auth needs {' and '.join(missing)} in the environment", file=sys.stderr
        )
        return 2
    folder.mkdir(exist_ok=True)
    if args.auth:
        os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config(folder).resolve())
    url = f"http://{args.host}:{args.port}"
    print(
        f"MLflow tracking server at {url} (runs: {shown(args.backend_store_uri)}; artifacts: "
        f"{args.artifacts_destination}); point jobs at it: export MLFLOW_TRACKING_URI={url}",
        flush=True,
    )
    line = command(args)
    os.execv(line[0], line)


if __name__ == "__main__":
    sys.exit(main())
