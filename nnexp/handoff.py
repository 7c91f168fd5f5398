"""The contract between a sweep and its jobs: where the store is and which run is their parent.

The sweep's launching process writes a ``SweepHandoff`` into the sweep directory before any job starts
(``nnexp.callbacks.SweepCallback``); each job, in whatever process a launcher runs it (a joblib worker,
a submitit job on another node), reads it to nest its run under the parent, and, in a search, to reach
the study.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

FILE = "nnexp_sweep.json"


@dataclass(frozen=True)
class SweepHandoff:
    """What a job needs to log into its sweep: where the store is and which run is its parent; for a
    search, where its study is."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    study_name: str | None = None
    study_storage: str | None = None

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def save(self, sweep_dir: Path) -> None:
        (sweep_dir / FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, sweep_dir: Path) -> SweepHandoff | None:
        """The sweep that launched the jobs in ``sweep_dir``, or None (a multirun without the callback)."""
        path = sweep_dir / FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None
