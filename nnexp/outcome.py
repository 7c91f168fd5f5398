"""How a sweep or a search ended, in one line: its last line on the console, and whether its parent
run ends FINISHED (and the command exits 0)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from mlflow.entities import Run

from nnexp.engine.history import OBJECTIVE
from nnexp.vocabulary import Status, Summary, Tag, Trial


@dataclass(frozen=True)
class Outcome:
    ok: bool
    line: str


def sweep_outcome(children: list[Run], jobs: int) -> Outcome:
    """A sweep of ``jobs`` jobs succeeds when every one of them has a run and the run FINISHED (a job
    that could not run, for want of its data say, has none)."""
    failed = jobs - sum(child.info.status == Status.FINISHED for child in children)
    return Outcome(jobs > 0 and not failed, f"sweep of {jobs} runs, {failed} failed")


def study_outcome(study: str, parent: Run, children: list[Run]) -> Outcome:
    """A search succeeds when at least one trial completed: failed trials (a diverging eta, say) are
    part of searching."""
    line = f"study {study!r}: {len(children)} trials ({trial_counts(children)})"
    best = parent.data.metrics.get(OBJECTIVE)
    if best is not None:
        trial = int(parent.data.metrics[Summary.BEST_TRIAL])
        line += f", best validation accuracy {best:.2%} (trial {trial})"
    return Outcome(any(child.data.tags.get(Tag.TRIAL_STATE) == Trial.COMPLETE for child in children), line)


def trial_counts(trials: list[Run]) -> str:
    """ "12 complete, 3 pruned, 1 failed": how a study's trials ended, by their runs' tags."""
    states = Counter(trial.data.tags.get(Tag.TRIAL_STATE, Trial.FAIL) for trial in trials)
    named = {Trial.COMPLETE: "complete", Trial.PRUNED: "pruned", Trial.FAIL: "failed"}
    return ", ".join(f"{states[state]} {name}" for state, name in named.items())
