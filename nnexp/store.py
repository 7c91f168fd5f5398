"""Where runs are recorded: the MLflow store rules, and the checks a store passes before anything is
written to it.

The store is ``$MLFLOW_TRACKING_URI`` if set, else ``mlflow.db`` in the directory the command was
started in, with artifacts in ``mlartifacts/`` beside it. Commands that record runs open the store
with ``open_experiment`` (creating it if need be); commands that only read it use ``connect``, which
never creates one. ``python -m nnexp.server ui`` shows the store in MLflow's UI.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse, urlsplit, urlunsplit

from filelock import FileLock

from nnexp.errors import StoreError
from nnexp.vocabulary import Tag

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

HOST, PORT = "127.0.0.1", 5000  # where MLflow's UI serves the store (`python -m nnexp.server ui`)
UI = f"http://{HOST}:{PORT}"
PREFLIGHT_SECONDS = 5.0  # how long a server may take to answer before a command gives up on it


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


@contextlib.contextmanager
def setting_up(uri: str) -> Iterator[None]:
    """Hold the store's set-up lock, a file beside a sqlite store (``mlflow.db.lock``), for as long as
    this process sets the store up: creating its schema or migrating it (MLflow does either as a
    process first opens a store) and creating an experiment. Any number of commands may start at once
    on one store, new or not: they take turns here, then write to it as MLflow does. A server's store
    sets itself up: nothing to hold."""
    path = local_path(uri) if urlparse(uri).scheme == "sqlite" else None
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        yield


def open_store(uri: str) -> MlflowClient:
    """A client of the store, set up in this process (its schema created if the store is new, which is
    said in one line with its path: a command started in another directory starts a store there, whose
    runs the project's store and its UI do not show)."""
    from mlflow.tracking import MlflowClient  # MLflow: 2 s of imports that `make ui` and `make server` skip

    with setting_up(uri):  # the client sets up its store as it is made
        path = local_path(uri) if urlparse(uri).scheme == "sqlite" else None
        new = path is not None and (not path.exists() or path.stat().st_size == 0)
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    if new:
        print(f"a new MLflow store: {path}", flush=True)
    return client


def open_experiment(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client of the store and the id of ``experiment``, both created if new (the experiment with its
    artifact location), safely whatever other commands do with the store at the same time."""
    client = open_store(uri)
    with setting_up(uri):
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return client, found.experiment_id
        experiment_id = client.create_experiment(
            experiment, artifact_location=artifact_location(uri), tags={Tag.EXPERIMENT_KIND: Tag.CLASSIC_ML}
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
    check(uri)
    from mlflow.tracking import MlflowClient  # MLflow: 2 s of imports that `make ui` and `make server` skip

    return MlflowClient(tracking_uri=uri)


def shown(uri: str) -> str:
    """A URI as it may be printed or logged: its password, if it holds one, replaced by ***."""
    parts = urlsplit(uri)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':')[0]}:***@{host}"))


def check(uri: str, experiment: str | None = None) -> None:
    """Refuse a store that cannot be used, in one line and before anything is created: a sqlite file
    that is not an MLflow database, a server that does not answer within seconds, fails, or refuses
    the user (401) or their access to ``experiment`` (403); and credentials written into the URI,
    which would then travel in logs (give them as MLFLOW_TRACKING_USERNAME / _PASSWORD)."""
    if shown(uri) != uri:
        raise StoreError(
            f"MLFLOW_TRACKING_URI={shown(uri)} holds a password: give it as MLFLOW_TRACKING_PASSWORD instead"
        )
    path = local_path(uri)
    if path is not None and urlparse(uri).scheme == "sqlite":
        check_sqlite(path)
    elif urlparse(uri).scheme in ("http", "https"):
        check_server(uri, experiment)


def check_sqlite(path: Path) -> None:
    """A sqlite store must be an MLflow database, or not exist yet (or be empty: MLflow fills it)."""
    if not path.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.Error as error:
        raise StoreError(f"the MLflow store {path} is unreadable or corrupt ({error})") from None
    if tables and "alembic_version" not in tables:
        raise StoreError(
            f"the MLflow store {path} is a sqlite database but not MLflow's (no alembic_version)"
        )


def check_server(uri: str, experiment: str | None) -> None:
    """Ask the server for ``experiment``, as the user the environment names, and, on a server with
    MLflow's basic-auth app, whether that user may write to it."""
    import requests  # only a server needs it

    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None
    who = f"user {user!r}" if user else "an anonymous user (MLFLOW_TRACKING_USERNAME is not set)"
    name = experiment or "Default"

    def get(path: str, **params: str) -> requests.Response:
        try:
            return requests.get(
                f"{uri.rstrip('/')}{path}", params=params, auth=auth, timeout=PREFLIGHT_SECONDS
            )
        except requests.Timeout:
            raise StoreError(
                f"the MLflow server {uri} does not answer within {PREFLIGHT_SECONDS:g} s"
            ) from None
        except requests.ConnectionError:
            raise StoreError(f"the MLflow server {uri} does not answer: cannot connect") from None

    found = get("/api/2.0/mlflow/experiments/get-by-name", experiment_name=name)
    if found.status_code == 401:
        raise StoreError(
            f"the MLflow server {uri} refused {who}: 401 not authenticated (wrong or missing "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
        )
    if found.status_code == 403:
        raise StoreError(
            f"the MLflow server {uri} refused {who}: 403 permission denied on experiment {name!r}"
        )
    if found.status_code == 404 and "RESOURCE_DOES_NOT_EXIST" in found.text:
        return  # the experiment will be created
    if not found.ok:
        raise StoreError(f"the MLflow server {uri} failed: HTTP {found.status_code} {found.reason}")
    experiment_id = found.json()["experiment"]["experiment_id"]
    if user is None:
        return
    access = get(
        "/api/3.0/mlflow/users/permissions/get",
        username=user,
        resource_type="experiment",
        resource_id=experiment_id,
    )
    if access.ok and access.json().get("permission") not in WRITERS:
        raise StoreError(
            f"the MLflow server {uri} refused {who}: 403 permission denied, it may only "
            f"{access.json().get('permission', 'READ').lower()} experiment {name!r}"
        )


WRITERS = ("EDIT", "MANAGE")  # the basic-auth app's permissions that may create runs in an experiment


def runs_url(experiment_id: str, ui: str = UI) -> str:
    """The page of the experiment's runs table in the UI at ``ui`` (MLflow 3 otherwise opens its GenAI
    view)."""
    return f"{ui}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
