"""The parent MLflow run of a sweep (``python -m nnexp.run -m ...``), kept by a Hydra callback.

In the launching process, before any job starts, ``SweepCallback`` sets up the store (a fresh sqlite
store cannot be set up by parallel jobs at once), creates the experiment and the parent run, and leaves
a ``SweepHandoff`` in the sweep directory; each job, possibly in a joblib worker, reads it to nest its
run under the parent. When the sweep ends, the parent gets the comparison report of its children and
ends FINISHED, or FAILED if a child did not finish. Hydra skips ``on_multirun_end`` when a job raises,
so an exit hook ends a parent that is still open: FAILED, or KILLED after Ctrl-C.
"""

from __future__ import annotations

import atexit
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from nnexp import report, store, tags, tracking

HANDOFF = "nnexp_sweep.json"


@dataclass(frozen=True)
class SweepHandoff:
    """What a job needs to log into its sweep: where the store is and which run is its parent."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str

    def save(self, sweep_dir: Path) -> None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / HANDOFF).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, sweep_dir: Path) -> SweepHandoff | None:
        """The sweep that launched the jobs in ``sweep_dir``, or None (a multirun without this callback)."""
        path = sweep_dir / HANDOFF
        return cls(**json.loads(path.read_text())) if path.is_file() else None


class SweepCallback(Callback):
    """Opens the parent run before the jobs, closes it with the report after them.

    Hydra turns a callback's exception into a warning; so a parent that cannot be created stops the
    sweep (SystemExit) rather than letting the jobs run untracked, and a report that fails still lets
    the parent end.
    """

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.sweep: SweepHandoff | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            uri = store.store_uri()
            self.client, experiment_id = store.open_experiment(uri, config.tracking.experiment)
            overrides = " ".join(config.hydra.overrides.task)
            run_tags = {tags.SWEEP: "true", tags.OVERRIDES: overrides, tags.GIT_COMMIT: tracking.git_commit()}
            name = f"sweep {overrides}".strip()
            parent = self.client.create_run(experiment_id, run_name=name, tags=run_tags)
            self.sweep = SweepHandoff(uri, experiment_id, parent.info.run_id)
            atexit.register(self._end_if_open)
            self.sweep.save(Path(config.hydra.sweep.dir))
        except (MlflowException, OSError) as error:
            sys.exit(f"cannot start the sweep's MLflow run: {error}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        parent = self.client.get_run(self.sweep.parent_run_id)
        children = report.sweep_children(self.client, parent)
        statuses = [self.client.get_run(run_id).info.status for run_id in children]
        finished = bool(statuses) and all(status == tracking.FINISHED for status in statuses)
        try:
            if children:
                with tempfile.TemporaryDirectory() as tmp:
                    for path in report.write_report(self.client, children, tmp, parent.info.run_name):
                        self.client.log_artifact(parent.info.run_id, str(path))
        finally:
            self._end(tracking.FINISHED if finished else tracking.FAILED)
        print(f"sweep of {len(children)} runs: {store.runs_url(parent.info.experiment_id)}")

    def _end_if_open(self) -> None:
        """The exit hook: the sweep stopped before ``on_multirun_end`` (a job raised, or Ctrl-C)."""
        if self.sweep is not None:
            interrupted = getattr(sys, "last_type", None) is KeyboardInterrupt  # the uncaught exception
            self._end(tracking.KILLED if interrupted else tracking.FAILED)

    def _end(self, status: str) -> None:
        self.client.set_terminated(self.sweep.parent_run_id, status)
        self.sweep = None
