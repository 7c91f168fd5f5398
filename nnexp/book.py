"""The book's MNIST results against nnexp's: ``experiments/RESULTS.md``, the last step of ``make reproduce``.

``ROWS`` holds what the book reports (``../shared/book-results.md``), each row tied to the experiment
config that reproduces it. Everything nnexp's column shows is read back from the MLflow store: the
latest sweep of each experiment, whose runs ``make reproduce`` has just made. Nothing measured is typed.

    python -m nnexp.book [--out experiments]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Run

from nnexp import errors, process, report, runs, store
from nnexp.engine.history import BEST_TEST_ACCURACY, EPOCHS_RUN, OBJECTIVE, best, key, summarize
from nnexp.errors import NotFound, UserError
from nnexp.outcome import trial_counts
from nnexp.vocabulary import Summary, Tag

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
TOLERANCE = 0.5  # percentage points: a row is reproduced when nnexp's peak is this close to the book's


@dataclass(frozen=True)
class Row:
    """One line of the book's table: its peak accuracy on ``split`` for the runs of ``experiment``
    whose params match ``where``; with several seeds the book quotes the best run."""

    number: str
    experiment: str
    setting: str
    split: str  # "test", "validation" or "train"
    book: float | None  # percent; None where the book gives no single number to match
    book_text: str
    where: Mapping[str, str] = field(default_factory=dict)
    rising: bool = False  # the book quotes where the curve starts as well as its peak


ROWS = (
    Row(
        "1",
        "ch1_quadratic_30",
        "[784,30,10] quadratic, large init, eta 3.0",
        "test",
        95.42,
        "95.42% (best of 3)",
    ),
    Row(
        "2",
        "ch1_quadratic_100",
        "[784,100,10] quadratic, large init, eta 3.0",
        "test",
        96.59,
        "96.59% (best of 3)",
    ),
    Row(
        "3",
        "ch1_learning_rate",
        "[784,100,10] quadratic, eta 0.001",
        "test",
        None,
        "11.39% rising to 21.42%",
        {"model.hidden": "[100]", "train.eta": "0.001"},
        rising=True,
    ),
    Row(
        "4",
        "ch1_learning_rate",
        "[784,30,10] quadratic, eta 100.0",
        "test",
        None,
        "stuck near 10%",
        {"model.hidden": "[30]", "train.eta": "100.0"},
    ),
    Row(
        "6", "ch3_crossentropy_30", "[784,30,10] cross-entropy, large init, eta 0.5", "test", 95.49, "95.49%"
    ),
    Row(
        "7",
        "ch3_crossentropy_100",
        "[784,100,10] cross-entropy, large init, eta 0.5",
        "test",
        96.82,
        "96.82%",
    ),
    Row("9", "ch3_crossentropy_30", "[784,30,10] cross-entropy: test accuracy", "test", 95.33, "95.33%"),
    Row("9", "ch3_crossentropy_30", "[784,30,10] cross-entropy: training accuracy", "train", 97.86, "97.86%"),
    Row("11", "ch3_l2_30", "[784,30,10] cross-entropy, L2 lmbda 5.0, eta 0.5", "test", 96.49, "96.49%"),
    Row(
        "12", "ch3_l2_100", "[784,100,10] cross-entropy, L2 lmbda 5.0, eta 0.5", "validation", 97.92, "97.92%"
    ),
    Row(
        "13",
        "ch3_l2_100_slow",
        "[784,100,10] cross-entropy, L2 lmbda 5.0, eta 0.1, 60 epochs",
        "validation",
        98.04,
        "98.04%",
    ),
)

# Experiments of what chapter 3 describes without running it on MNIST: no book number to compare with.
BEYOND = (
    "ch3_quadratic_vs_crossentropy",
    "ch3_dropout_vs_l2",
    "ch3_early_stopping",
    "ch3_tanh_vs_sigmoid",
    "ch3_weight_init",
)


# The search set beside the book's hand tuning: the study of this preset, against row 11's eta 0.5 and
# lmbda 5.0, the values the book chose by hand for the same network.
SEARCH = "ch3_eta_lmbda"
HAND_TUNED = next(row for row in ROWS if row.number == "11")
SEARCH_FIGURES = ("trial_curves.png", "optimization_history.png")


@dataclass
class ExperimentRuns:
    """The runs of an experiment's latest sweep, with their histories, as the report reads them."""

    name: str
    parent: Run
    runs: list[Run]
    histories: dict[str, object]  # run id -> per-epoch DataFrame

    @property
    def seconds(self) -> float:
        return (self.parent.info.end_time - self.parent.info.start_time) / 1000

    def matching(self, where: Mapping[str, str]) -> list[Run]:
        return [r for r in self.runs if all(r.data.params.get(k) == v for k, v in where.items())]

    def peak(self, run: Run, split: str) -> float:
        """The run's peak accuracy on ``split``, in percent."""
        history = self.histories[run.info.run_id].to_dict("records")
        return 100 * summarize(history)[best(key(split, "accuracy"))]


def load_sweep(client, experiment: str, figures: Path) -> ExperimentRuns:
    """The latest sweep of ``experiment``, and its comparison figures written under ``figures``."""
    run_ids, _ = report.select_runs(client, experiment=experiment, sweep="latest")
    children = [client.get_run(run_id) for run_id in run_ids]
    parent = client.get_run(children[0].data.tags[Tag.PARENT])
    histories = {run_id: report.run_history(client, run_id) for run_id in run_ids}
    report.write_report(client, run_ids, figures / experiment, experiment)
    return ExperimentRuns(experiment, parent, children, histories)


def measured(row: Row, sweep: ExperimentRuns) -> tuple[str, float | None, str]:
    """(nnexp's figure as text, its peak in percent, the seeds behind it) for one row."""
    matching = sweep.matching(row.where)
    if not matching:
        raise NotFound(f"experiment {row.experiment} has no run with {dict(row.where)}")
    best = max(matching, key=lambda run: sweep.peak(run, row.split))
    peak = sweep.peak(best, row.split)
    seeds = ", ".join(sorted(run.data.tags.get(Tag.SEED, "?") for run in matching))
    if row.rising:
        first = 100 * float(sweep.histories[best.info.run_id][key(row.split, "accuracy")].iloc[0])
        return f"{first:.2f}% rising to {peak:.2f}%", peak, seeds
    if len(matching) == 1:
        return f"{peak:.2f}%", peak, seeds
    worst = min(sweep.peak(run, row.split) for run in matching)
    return f"{peak:.2f}% (best of {len(matching)}; worst {worst:.2f}%)", peak, seeds


@dataclass
class StudyRuns:
    """The latest study of a search preset: its parent run and its trials' runs."""

    name: str
    parent: Run
    trials: list[Run]


def load_study(client, preset: str, figures: Path) -> StudyRuns:
    """The latest study of ``preset`` (the experiment its preset names), and its pictures copied into
    ``figures``."""
    experiment = client.get_experiment_by_name(preset)
    found = [] if experiment is None else runs.find(client, [experiment.experiment_id])
    studies = [run for run in found if Tag.SEARCH in run.data.tags]
    if not studies:
        raise NotFound(f"no study of search={preset} in the store: python -m nnexp.run -m search={preset}")
    parent = max(studies, key=lambda run: run.info.start_time)
    trials = runs.children(client, parent)
    (figures / preset).mkdir(parents=True, exist_ok=True)
    for name in SEARCH_FIGURES:
        client.download_artifacts(parent.info.run_id, name, str(figures / preset))
    return StudyRuns(preset, parent, trials)


def search_table(study: StudyRuns) -> list[str]:
    """The search's best trial beside the book's hand-tuned eta and lmbda, as markdown lines."""
    metrics = study.parent.data.metrics
    best = next(
        t for t in study.trials if t.data.tags.get(Tag.TRIAL) == str(int(metrics[Summary.BEST_TRIAL]))
    )
    params = best.data.params
    epochs = sum(int(t.data.metrics.get(EPOCHS_RUN, 0)) for t in study.trials)
    budget = len(study.trials) * int(params["train.epochs"])
    cells = [
        f"nnexp's search, trial {best.data.tags[Tag.TRIAL]}",
        f"{float(params['train.eta']):.3g}",
        f"{float(params['regularization.lmbda']):.3g}",
        f"{100 * metrics[OBJECTIVE]:.2f}%",
        f"{100 * best.data.metrics[BEST_TEST_ACCURACY]:.2f}%",
        f"{len(study.trials)} ({trial_counts(study.trials)})",
        f"{epochs} of {budget} ({epochs / budget:.0%})",
    ]
    return [
        "| chosen by | eta | lmbda | best validation | peak test | trials | epochs trained |",
        "|---|---|---|---|---|---|---|",
        f"| the book, by hand (row 11) | 0.5 | 5.0 | | {HAND_TUNED.book_text} | | |",
        f"| {' | '.join(cells)} |",
    ]


def verdict(row: Row, peak: float) -> str:
    if row.book is None:
        return "qualitative, see notes"
    difference = peak - row.book
    mark = "yes" if abs(difference) <= TOLERANCE else "**no**"
    return f"{difference:+.2f} pp, {mark}"


def book_table(sweeps: Mapping[str, ExperimentRuns]) -> list[str]:
    """The book's rows against nnexp's, as markdown lines (RESULTS.md and the README share it)."""
    lines = [
        "| row | setting | on | book | nnexp | difference, reproduced | seeds | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        sweep = sweeps[row.experiment]
        text, peak, seeds = measured(row, sweep)
        lines.append(
            f"| {row.number} | {row.setting} (`experiment={row.experiment}`) | {row.split} | "
            f"{row.book_text} | {text} | {verdict(row, peak)} | {seeds} | {sweep.seconds:.0f} s |"
        )
    return lines


def render(sweeps: Mapping[str, ExperimentRuns], study: StudyRuns, figures: Path, out: Path) -> str:
    rel = figures.relative_to(out)
    lines = [
        "# The book's MNIST results, reproduced",
        "",
        "Written by `make reproduce` (`python -m nnexp.results`) from the runs in the MLflow store: every",
        "nnexp figure below is measured. The book's figures are from `../shared/book-results.md`: the",
        f"**peak** accuracy over a run's epochs. A row is reproduced when nnexp's peak is within {TOLERANCE}",
        "percentage points (pp) of the book's; for chapter 1 both are the best of three seeds.",
        "",
        *book_table(sweeps),
        "",
        "## Beyond the book's runs",
        "",
        "Chapter 3 describes these without running them on MNIST; peaks of each run:",
        "",
        "| experiment | run | best validation | best test | epochs | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for name in BEYOND:
        sweep = sweeps[name]
        for run in sweep.runs:
            label = run.data.tags.get(Tag.OVERRIDES) or run.info.run_name
            history = sweep.histories[run.info.run_id]
            lines.append(
                f"| `{name}` | {label} | {sweep.peak(run, 'validation'):.2f}% | "
                f"{sweep.peak(run, 'test'):.2f}% | {len(history)} | {sweep.seconds:.0f} s |"
            )
    lines += [
        "",
        f"## The book's hand tuning against a search (`search={study.name}`)",
        "",
        "Chapter 3 chooses eta and lmbda for [784,30,10] (cross-entropy, L2, 30 epochs, mini-batch 10) by",
        "hand. The search chose them by validation accuracy alone, stopping weak trials early; the test",
        "figure is shown only to set it beside the book's, which is a peak test accuracy.",
        "",
        *search_table(study),
        "",
        *(f"![{name}]({rel / study.name / name})" for name in SEARCH_FIGURES),
        "",
        "## Learning curves",
        "",
    ]
    for name in sweeps:
        lines += [f"### `{name}`", "", f"![{name}]({rel / name / 'accuracy.png'})", ""]
    notes = out / "NOTES.md"
    if notes.exists():
        lines += ["## Notes", "", notes.read_text().strip(), ""]
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: Sequence[str]) -> None:
    """Put the table between the README's results markers, so the README quotes measured numbers too."""
    text = readme.read_text()
    head, start, rest = text.partition(README_START)
    _, end, tail = rest.partition(README_END)
    if not (start and end):
        raise UserError(f"{readme} lacks the markers {README_START} ... {README_END}")
    readme.write_text(head + start + "\n" + "\n".join(table) + "\n" + end + tail)


@errors.one_line("python -m nnexp.book")
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnexp.book", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("experiments"),
        help="where RESULTS.md and the figures (results/) go (default: experiments)",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        default=Path("README.md"),
        help="the README whose results table to update (default: README.md)",
    )
    args = parser.parse_args(argv)
    client = store.connect(store.store_uri())
    figures = args.out / "results"
    names = dict.fromkeys([row.experiment for row in ROWS] + list(BEYOND))
    sweeps = {name: load_sweep(client, name, figures) for name in names}
    text = render(sweeps, load_study(client, SEARCH, figures), figures, args.out)
    update_readme(args.readme, book_table(sweeps))
    (args.out / "RESULTS.md").write_text(text)
    print(f"wrote {args.out / 'RESULTS.md'} and the results table of {args.readme}")
    return 0


if __name__ == "__main__":
    process.prepare()
    sys.exit(main())
