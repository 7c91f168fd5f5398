"""How a run, a sweep or a search ended, in the words its last lines use: what it is (its id), how it
ended, and the command a user wants next with that id; and whether a sweep's parent run ends FINISHED
(and the command exits 0)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow.entities import Run

from nnexp.engine.history import BEST_EPOCH, OBJECTIVE
from nnexp.vocabulary import Status, Summary, Tag, Trial

RUN, REPORT = "python -m nnexp.run", "python -m nnexp.report"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    line: str


def ended(what: str, run_id: str, status: str, detail: str = "") -> str:
    """ "run <id> FINISHED, best validation accuracy 96.54% (epoch 27)": how a run (or a sweep, its
    parent run) ended, said with its id."""
    return f"{what} {run_id} {status}{detail}"


def trained(summary: Mapping[str, float], pruned: bool = False) -> str:
    """ ", best validation accuracy 96.54% (epoch 27)": what a finished run reached (nothing before its
    first epoch)."""
    if OBJECTIVE not in summary:
        return ""
    stopped = ", pruned" if pruned else ""
    return f"{stopped}, best validation accuracy {summary[OBJECTIVE]:.2%} (epoch {int(summary[BEST_EPOCH])})"


def next_command(run_id: str, status: str, sweep: bool) -> str:
    """The command a user wants next, as a run's or a sweep's last line: the report of one that ended,
    or, for one that Ctrl-C stopped, the command that takes it up again."""
    if status == Status.KILLED:
        return f"resume: {RUN} resume={run_id}"
    return f"report: {REPORT} {'--sweep' if sweep else '--runs'} {run_id}"


def sweep_outcome(children: list[Run], jobs: int) -> Outcome:
    """A sweep of ``jobs`` jobs succeeds when every one of them has a run and the run FINISHED (a job
    that could not run, for want of its data say, has none)."""
    failed = jobs - sum(child.info.status == Status.FINISHED for child in children)
    return Outcome(jobs > 0 and not failed, f"{jobs} runs, {failed} failed")


def study_outcome(study: str, parent: Run, children: list[Run]) -> Outcome:
    """A search succeeds when at least one trial completed: failed trials (a diverging eta, say) are
    part of searching."""
    line = f"study {study!r}, {len(children)} trials ({trial_counts(children)})"
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
