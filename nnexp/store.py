"""Where runs are recorded: the MLflow store rules, and the UI that shows them.

The store is ``$MLFLOW_TRACKING_URI`` if set, else ``mlflow.db`` in the directory the command was
started in, with artifacts in ``mlartifacts/`` beside it. Commands that record runs open the store
with ``open_experiment`` (creating it if need be); commands that only read it use ``connect``, which
never creates one.

    python -m nnexp.store url [EXPERIMENT]   # print the runs-table URL of the store in this directory
    python -m nnexp.store ui [EXPERIMENT]    # the same, then serve that store with `mlflow ui`
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from mlflow.tracking import MlflowClient

from nnexp import tags

HOST, PORT = "127.0.0.1", 5000  # where `mlflow ui` serves the store (`python -m nnexp.store ui`)
UI = f"http://{HOST}:{PORT}"


class StoreError(Exception):
    """The store cannot be used (missing, unreadable...): reported as one line, no traceback."""


def store_uri(start_dir: Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI if set, else ``mlflow.db`` in the directory the command was started in."""
    start = Path(start_dir) if start_dir is not None else Path.cwd()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{start.resolve() / 'mlflow.db'}"


def local_path(uri: str) -> Path | None:
    """The file or directory of a local store (sqlite or file URI, or a plain path); None for a server."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return Path(uri.removeprefix("sqlite:///"))
    if parsed.scheme in ("file", ""):
        return Path(parsed.path)
    return None


def artifact_location(uri: str) -> str | None:
    """``mlartifacts/`` beside a sqlite store, as an absolute file URI, so that ``mlflow ui`` started in
    any directory serves the artifacts. Other stores (a tracking server) keep their own default."""
    if urlparse(uri).scheme != "sqlite":
        return None
    return (local_path(uri).parent / "mlartifacts").as_uri()


def open_experiment(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client of the store and the id of ``experiment``, both created if new (the experiment with its
    artifact location).

    The first call on a fresh sqlite store also creates its schema: for a sweep, call this once in the
    launching process, because parallel jobs racing to set up one sqlite file fail.
    """
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return client, found.experiment_id
    experiment_id = client.create_experiment(
        experiment, artifact_location=artifact_location(uri), tags={tags.EXPERIMENT_KIND: tags.CLASSIC_ML}
    )
    return client, experiment_id


def connect(uri: str) -> MlflowClient:
    """A client of an existing store. A local store that is missing is an error rather than something
    to create: MLflow would otherwise silently create an empty mlflow.db wherever the command was run."""
    path = local_path(uri)
    if path is not None and not path.exists():
        raise StoreError(
            f"no MLflow store at {path} (run `python -m nnexp.run` here first, or set MLFLOW_TRACKING_URI)"
        )
    return MlflowClient(tracking_uri=uri)


def runs_url(experiment_id: str) -> str:
    """The UI page of the experiment's runs table (MLflow 3 otherwise opens its GenAI view)."""
    return f"{UI}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def main(argv: Sequence[str] | None = None) -> int:
    """``url [EXPERIMENT]`` prints the runs-table URL of this directory's store; ``ui [EXPERIMENT]`` also
    starts the MLflow UI on it, bound to 127.0.0.1. Printing the URL never creates a store."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("url", "ui") or len(args) > 2:
        print("usage: python -m nnexp.store {url,ui} [EXPERIMENT]", file=sys.stderr)
        return 2
    uri, name = store_uri(), (args[1] if len(args) == 2 else "nnexp")
    path = local_path(uri)
    missing = path is not None and not path.exists()
    experiment = None if missing else MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    print(runs_url(experiment.experiment_id) if experiment is not None else f"{UI}/#/experiments", flush=True)
    if args[0] == "ui":
        command = ["mlflow", "ui", "--backend-store-uri", uri, "--host", HOST, "--port", str(PORT)]
        os.execv(sys.executable, [sys.executable, "-m", *command])
    return 0


if __name__ == "__main__":
    sys.exit(main())
