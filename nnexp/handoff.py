"""The contract between a sweep and its jobs: where the store is and which run is their parent.

The sweep's launching process writes a ``SweepHandoff`` into the sweep directory before any job starts
(``nnexp.callbacks.SweepCallback``); each job, in whatever process a launcher runs it (a joblib worker,
a submitit job on another node), reads it to nest its run under the parent, and, in a search, to reach
the study.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nnexp.vocabulary import Tag

FILE = "nnexp_sweep.json"


def stderr_stream() -> str:
    """Which stream this process's stderr is, on which machine: a job whose stderr is its launcher's
    (the basic launcher's own, joblib's workers') has already shown its lines where the user looks."""
    stat = os.fstat(2)
    return f"{socket.gethostname()} {stat.st_dev} {stat.st_ino}"


@dataclass(frozen=True)
class SweepHandoff:
    """What a job needs to log into its sweep: where the store is and which run is its parent; for a
    search, where its study is."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    study_name: str | None = None
    study_storage: str | None = None
    launcher_stderr: str | None = None  # the launching process's ``stderr_stream()``

    def record_failure(self, job: int, line: str) -> None:
        """Leave a job's one-line failure on the sweep's parent run when the job's stderr is not its
        launcher's (a submitit job writes to a log file of its own), so that the launching process,
        which the user watches, prints it before the sweep's last lines."""
        if stderr_stream() == self.launcher_stderr:
            return
        with contextlib.suppress(MlflowException):  # the store is what failed: the job's log has the line
            self.client().set_tag(self.parent_run_id, f"{Tag.FAILED_JOB}{job}", line)

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def save(self, sweep_dir: Path) -> None:
        (sweep_dir / FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, sweep_dir: Path) -> SweepHandoff | None:
        """The sweep that launched the jobs in ``sweep_dir``, or None (a multirun without the callback)."""
        path = sweep_dir / FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None
