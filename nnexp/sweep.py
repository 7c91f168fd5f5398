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
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from nnexp import record, report, resume, store, tags, tracking
from nnexp.config import sweep_jobs
from nnexp.engine.history import OBJECTIVE

HANDOFF = "nnexp_sweep.json"
JOBS = "jobs.json"  # the parent run's artifact: every job's overrides, in job order


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
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / HANDOFF).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, sweep_dir: Path) -> SweepHandoff | None:
        """The sweep that launched the jobs in ``sweep_dir``, or None (a multirun without this callback)."""
        path = sweep_dir / HANDOFF
        return cls(**json.loads(path.read_text())) if path.is_file() else None


class SweepCallback(Callback):
    """Opens the parent run before the jobs (or reopens it, for ``resume=<sweep id>``), closes it with
    the report after them.

    Hydra turns a callback's exception into a warning; so a parent that cannot be created stops the
    sweep (SystemExit) rather than letting the jobs run untracked, and a report that fails still lets
    the parent end. The sweep's last line says how many of its runs failed; if any did, the command
    exits with status 1.
    """

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.sweep: SweepHandoff | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from nnexp import search  # here, not above: a search's modules are for searches

        try:
            uri = store.store_uri()
            self.client, experiment_id = store.open_experiment(uri, config.tracking.experiment)
            study = search.study_of(config)
            if study is not None:
                parent_id = self._study_parent(config, experiment_id, study.name)
            elif config.get(resume.KEY):
                parent_id = self._reopen(config, config.get(resume.KEY))
            else:
                parent_id = self._create(config, experiment_id, {tags.SWEEP: "true"}).info.run_id
                self.client.log_dict(parent_id, {"jobs": jobs_of(config)}, JOBS)
            where = (study.name, study.storage) if study is not None else ()
            self.sweep = SweepHandoff(uri, experiment_id, parent_id, *where)
            atexit.register(self._end_if_open)
            self.sweep.save(Path(config.hydra.sweep.dir))
        except Exception as error:  # any: Hydra would only warn, and the jobs would run untracked
            sys.exit(f"cannot start the sweep's MLflow run: {str(error).strip().splitlines()[0]}")

    def _create(self, config: DictConfig, experiment_id: str, kind: dict[str, str]) -> Run:
        """A new parent run, with what a resume needs: its overrides and launcher settings."""
        overrides = tags.join_overrides(config.hydra.overrides.task)
        run_tags = {
            **kind,
            tags.OVERRIDES: overrides,
            tags.HYDRA_OVERRIDES: tags.join_overrides(config.hydra.overrides.hydra),
            **record.source_tags(),
            **tracking.process_tags(),
        }
        return self.client.create_run(experiment_id, run_name=f"sweep {overrides}".strip(), tags=run_tags)

    def _study_parent(self, config: DictConfig, experiment_id: str, study: str) -> str:
        """The search's parent run: one per study, continued (RUNNING again) when the study continues."""
        found = self.client.search_runs([experiment_id], f"tags.`{tags.SEARCH}` = '{study}'")
        if not found:
            return self._create(config, experiment_id, {tags.SWEEP: "true", tags.SEARCH: study}).info.run_id
        return self._take_up(found[0].info.run_id)

    def _reopen(self, config: DictConfig, parent_id: str) -> str:
        """The resumed sweep's parent, RUNNING again, once its job list is checked to be the same."""
        recorded = self._recorded_jobs(parent_id)
        if recorded is not None and recorded != jobs_of(config):
            sys.exit(
                f"sweep {parent_id}: its jobs are no longer the ones it started with (has conf/ changed?)"
            )
        return self._take_up(parent_id)

    def _take_up(self, parent_id: str) -> str:
        self.client.update_run(parent_id, tracking.RUNNING)
        for key, value in tracking.process_tags().items():
            self.client.set_tag(parent_id, key, value)
        return parent_id

    def _recorded_jobs(self, parent_id: str) -> list[list[str]] | None:
        if not any(artifact.path == JOBS for artifact in self.client.list_artifacts(parent_id)):
            return None  # a sweep from before job lists were kept
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(self.client.download_artifacts(parent_id, JOBS, tmp)).read_text())["jobs"]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        parent = self.client.get_run(self.sweep.parent_run_id)
        children = [self.client.get_run(run_id) for run_id in report.sweep_children(self.client, parent)]
        study = parent.data.tags.get(tags.SEARCH)
        outcome = study_outcome(study, parent, children) if study else sweep_outcome(children)
        try:
            if children:
                run_ids = [child.info.run_id for child in children]
                with tempfile.TemporaryDirectory() as tmp:
                    for path in report.write_report(self.client, run_ids, tmp, parent.info.run_name):
                        self.client.log_artifact(parent.info.run_id, str(path))
        finally:
            self._end(tracking.FINISHED if outcome.ok else tracking.FAILED)
        print(f"{outcome.line}: {store.runs_url(parent.info.experiment_id)}", flush=True)
        if not outcome.ok:
            sys.exit(1)

    def _end_if_open(self) -> None:
        """The exit hook: the sweep stopped before ``on_multirun_end`` (a job raised, or Ctrl-C)."""
        if self.sweep is not None:
            interrupted = getattr(sys, "last_type", None) is KeyboardInterrupt  # the uncaught exception
            self._end(tracking.KILLED if interrupted else tracking.FAILED)

    def _end(self, status: str) -> None:
        self.client.set_terminated(self.sweep.parent_run_id, status)
        self.sweep = None


def jobs_of(config: DictConfig) -> list[list[str]]:
    """The sweep's job list as it records it: every job's overrides, but ``resume``."""
    return [[o for o in job if not o.startswith(f"{resume.KEY}=")] for job in sweep_jobs(config)]


@dataclass(frozen=True)
class Outcome:
    """How a sweep ended: whether its parent ends FINISHED (and the command exits 0), and its last line."""

    ok: bool
    line: str


def sweep_outcome(children: list[Run]) -> Outcome:
    """A sweep succeeds when every one of its runs FINISHED."""
    failed = sum(child.info.status != tracking.FINISHED for child in children)
    return Outcome(bool(children) and not failed, f"sweep of {len(children)} runs, {failed} failed")


def study_outcome(study: str, parent: Run, children: list[Run]) -> Outcome:
    """A search succeeds when at least one trial completed: failed trials (a diverging eta, say) are
    part of searching."""
    line = f"study {study!r}: {len(children)} trials ({trial_counts(children)})"
    best = parent.data.metrics.get(OBJECTIVE)
    if best is not None:
        trial = int(parent.data.metrics[tracking.BEST_TRIAL])
        line += f", best validation accuracy {best:.2%} (trial {trial})"
    return Outcome(any(child.data.tags.get(tags.TRIAL_STATE) == "COMPLETE" for child in children), line)


def trial_counts(trials: list[Run]) -> str:
    """ "12 complete, 3 pruned, 1 failed": how a study's trials ended, by their runs' tags."""
    states = Counter(trial.data.tags.get(tags.TRIAL_STATE, "FAIL") for trial in trials)
    named = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
    return ", ".join(f"{states[state]} {name}" for state, name in named.items())
