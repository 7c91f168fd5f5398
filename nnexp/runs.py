"""Runs in the store: found by their tags (every page of them), fetched or refused in one line, taken
up again by a new process, and their epochs read back.

MLflow returns at most 1,000 runs a page: ``find`` follows the pages, so a sweep or a study of any size
is seen whole by the report, a resume and a search alike.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nnexp.engine.history import CURVES, EPOCH, EPOCH_SECONDS, ETA, Metrics
from nnexp.errors import NotFound
from nnexp.vocabulary import Status, Tag

OLDEST_FIRST = ("attributes.start_time ASC",)


def find(
    client: MlflowClient,
    experiment_ids: Sequence[str],
    tags: Mapping[str, str] | None = None,
    order_by: Sequence[str] = OLDEST_FIRST,
) -> list[Run]:
    """Every run of the experiments whose tags have the given values, following MLflow's pages."""
    query = " and ".join(f"tags.`{name}` = '{value}'" for name, value in (tags or {}).items())
    found, token = [], None
    while True:
        page = client.search_runs(list(experiment_ids), query, order_by=list(order_by), page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def children(client: MlflowClient, parent: Run) -> list[Run]:
    """A sweep's (or a search's) runs, in job order."""
    found = find(client, [parent.info.experiment_id], {Tag.PARENT: parent.info.run_id})
    return sorted(found, key=lambda run: int(run.data.tags.get(Tag.JOB, "0") or 0))


def get(client: MlflowClient, run_id: str, what: str = "run") -> Run:
    """The run of ``run_id``, or ``NotFound`` naming the id and the store."""
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise NotFound(f"unknown {what} id {run_id!r} in the MLflow store {client.tracking_uri}") from None


def process_tags() -> dict[str, str]:
    """Which process writes a run: what keeps a resume from writing it at the same time."""
    return {Tag.HOST: socket.gethostname(), Tag.PID: str(os.getpid())}


def take_up(client: MlflowClient, run_id: str) -> None:
    """Make a run that ended (or whose process died) this process's own again: RUNNING, with this
    process's tags."""
    client.update_run(run_id, Status.RUNNING)
    for key, value in process_tags().items():
        client.set_tag(run_id, key, value, synchronous=True)


def stored_history(client: MlflowClient, run_id: str) -> list[Metrics]:
    """The epochs a run logged, read back from the store: one ``Metrics`` per step."""
    epochs: dict[int, Metrics] = {}
    for curve in (*CURVES, EPOCH_SECONDS, ETA):
        for metric in client.get_metric_history(run_id, curve):
            epochs.setdefault(metric.step, {EPOCH: metric.step})[curve] = metric.value
    return [epochs[epoch] for epoch in sorted(epochs)]
