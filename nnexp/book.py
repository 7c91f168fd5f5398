"""The book's MNIST results against nnexp's: ``experiments/RESULTS.md``, the last step of ``make reproduce``.

``ROWS`` holds what the book reports (``../shared/book-results.md``), each row tied to the experiment
config that reproduces it. Everything nnexp's column shows is read back from the MLflow store: the
latest sweep of each experiment, whose runs ``make reproduce`` has just made. Nothing measured is typed.

    python -m nnexp.book [--out experiments]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Run

from nnexp import errors, process, report, runs, store
from nnexp.engine.history import (
    BEST_TEST_ACCURACY,
    EPOCHS_RUN,
    INITIAL,
    OBJECTIVE,
    best,
    key,
    learning_speed_keys,
    summarize,
)
from nnexp.errors import NotFound, UserError
from nnexp.outcome import trial_counts
from nnexp.plots import plot_learning_speeds
from nnexp.vocabulary import Summary, Tag

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
TOLERANCE = 0.5  # percentage points: a row is reproduced when nnexp's peak is this close to the book's


@dataclass(frozen=True)
class Row:
    """One line of the book's table: its peak accuracy on ``split`` for the runs of ``experiment``
    whose params match ``where``; with several seeds the book quotes the best run.

    Chapter 5's rows each read one depth of a sweep over depths (``network``, the runs' ``model.hidden``)
    and compare the book's one run or one random draw with the spread of nnexp's seeds: ``statistic``
    says what they compare (``MEASURES``)."""

    number: str
    experiment: str
    setting: str
    split: str  # "test", "validation" or "train"
    book: float | None  # percent; None where the book gives no single number to match
    book_text: str
    where: Mapping[str, str] = field(default_factory=dict)
    rising: bool = False  # the book quotes where the curve starts as well as its peak
    network: str | None = None  # the model.hidden param of the runs the row reads, if it picks a depth
    statistic: str = "peak"
    book_values: tuple[float, ...] = ()  # the book's speeds of learning, first hidden layer first
    tolerance: float = TOLERANCE  # percentage points, for the rows that compare accuracies


HIDDEN = {depth: str([30] * depth) for depth in (1, 2, 3, 4)}  # model.hidden params, by depth
SPEEDS_AT_START = {2: (0.07, 0.31), 3: (0.012, 0.060, 0.283), 4: (0.003, 0.017, 0.070, 0.285)}
RATIOS_AT_START = {2: 4.5, 3: 24.0, 4: 95.0}  # the book's last hidden layer's speed over its first's
SPEEDS_TRAINED = {2: (0.0034, 0.0096), 3: (8.6e-5, 2.2e-4, 1.26e-3), 4: (8e-6, 2.6e-5, 1.8e-4, 9.2e-4)}
BOOK_LAST_EPOCH = 499  # the book measures before each of its 500 steps: its last is after 499 of them
DEPTH_TOLERANCE = 0.6  # pp: chapter 5's accuracies, one run in the book against nnexp's median
RATIO_FACTOR = 2.0  # the ratio of speeds at initialization is reproduced within this factor of the book's
INCREASING_SEEDS = 0.9  # ... and the speeds increase layer by layer in this share of the seeds at least
SPEED_RUNS = "first 1,000 training images"


def _net(hidden: int) -> str:
    return "[784," + "30," * hidden + "10]"


def _chapter_5() -> tuple[Row, ...]:
    rows = [
        Row(
            "ch5",
            "ch5_depth",
            f"{_net(depth)} cross-entropy, L2 lmbda 5.0, eta 0.1",
            "validation",
            accuracy,
            f"{accuracy:.2f}% (one run)",
            network=HIDDEN[depth],
            statistic="median",
            tolerance=DEPTH_TOLERANCE,
        )
        for depth, accuracy in ((1, 96.48), (2, 96.90), (3, 96.57), (4, 96.53))
    ]
    for depth, speeds in SPEEDS_AT_START.items():
        rows += [
            Row(
                "ch5",
                "ch5_initial_speed",
                f"{_net(depth)}: speeds of learning at initialization",
                SPEED_RUNS,
                None,
                ", ".join(f"{v:g}" for v in speeds) + " (one draw)",
                network=HIDDEN[depth],
                statistic="initial",
                book_values=speeds,
            ),
            Row(
                "ch5",
                "ch5_initial_speed",
                f"{_net(depth)}: last hidden layer's speed over the first's, at initialization",
                SPEED_RUNS,
                None,
                f"{RATIOS_AT_START[depth]:g}x",
                network=HIDDEN[depth],
                statistic="ratio",
                book_values=(RATIOS_AT_START[depth],),
            ),
        ]
    rows += [
        Row(
            "ch5",
            "ch5_learning_speed",
            f"{_net(depth)}: speeds of learning after {BOOK_LAST_EPOCH} steps of full-batch descent",
            SPEED_RUNS,
            None,
            ", ".join(f"{v:.2g}" for v in speeds),
            network=HIDDEN[depth],
            statistic="trained",
            book_values=speeds,
        )
        for depth, speeds in SPEEDS_TRAINED.items()
    ]
    return tuple(rows)


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
    *_chapter_5(),
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
    client: object  # the store's MlflowClient, for the curves the histories do not hold (speeds)

    @property
    def seconds(self) -> float:
        return (self.parent.info.end_time - self.parent.info.start_time) / 1000

    def matching(self, where: Mapping[str, str]) -> list[Run]:
        return [r for r in self.runs if all(r.data.params.get(k) == v for k, v in where.items())]

    def of_row(self, row: Row) -> list[Run]:
        """The runs a row reads: those matching its ``where`` and, if it names one, its network."""
        depth = {} if row.network is None else {"model.hidden": row.network}
        matching = self.matching({**row.where, **depth})
        if not matching:
            raise NotFound(f"experiment {row.experiment} has no run with {dict(row.where) | depth}")
        return matching

    def speeds(self, run: Run, epoch: int) -> list[float]:
        """The run's speeds of learning at ``epoch``, first hidden layer first."""
        history = report.speed_history(self.client, run)
        values = history[history["epoch"] == epoch].drop(columns="epoch")
        if values.empty:
            raise NotFound(f"run {run.info.run_id} of {self.name} has no speeds of learning at epoch {epoch}")
        return [float(values[column].iloc[0]) for column in learning_speed_keys(values.columns)]

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
    return ExperimentRuns(experiment, parent, children, histories, client)


def measured(row: Row, sweep: ExperimentRuns) -> tuple[str, float | None, str]:
    """(nnexp's figure as text, its peak in percent, the seeds behind it) for one row."""
    matching = sweep.of_row(row)
    seeds = ", ".join(sorted((run.data.tags.get(Tag.SEED, "?") for run in matching), key=_seed_order))
    if row.statistic == "median":
        peaks = [sweep.peak(run, row.split) for run in matching]
        median = statistics.median(peaks)
        return f"{median:.2f}% (median of {len(peaks)}; {min(peaks):.2f}-{max(peaks):.2f}%)", median, seeds
    best = max(matching, key=lambda run: sweep.peak(run, row.split))
    peak = sweep.peak(best, row.split)
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


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.isdigit() else (-1, seed)


def verdict(row: Row, peak: float) -> str:
    if row.book is None:
        return "qualitative, see notes"
    difference = peak - row.book
    mark = "yes" if abs(difference) <= row.tolerance else "**no**"
    return f"{difference:+.2f} pp, {mark}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def speed_cells(row: Row, sweep: ExperimentRuns) -> tuple[str, str, str]:
    """(nnexp's figure, the verdict, the seeds) of a chapter-5 row of speeds of learning.

    ``initial``: each hidden layer's speed at epoch 0, the median over the seeds with its range, and
    whether the book's one draw lies in that range. ``ratio``: the last hidden layer's speed over the
    first's at epoch 0, reproduced when the median is within a factor 2 of the book's and the speeds
    increase from the first hidden layer to the last in 9 seeds of 10. ``trained``: the speeds after
    the book's last step (qualitative: one run, the shape of the curves is the result).
    """
    matching = sweep.of_row(row)
    seeds = ", ".join(sorted((run.data.tags.get(Tag.SEED, "?") for run in matching), key=_seed_order))
    if row.statistic == "trained":
        (run,) = matching
        speeds = sweep.speeds(run, BOOK_LAST_EPOCH)
        ratio, book_ratio = speeds[-1] / speeds[0], row.book_values[-1] / row.book_values[0]
        text = ", ".join(f"{v:.2g}" for v in speeds)
        return text, f"qualitative; last over first {ratio:.0f}x (book {book_ratio:.0f}x)", seeds
    draws = [sweep.speeds(run, INITIAL) for run in matching]
    if row.statistic == "ratio":
        ratios = [speeds[-1] / speeds[0] for speeds in draws]
        median = statistics.median(ratios)
        increasing = sum(all(a < b for a, b in zip(d, d[1:], strict=False)) for d in draws)
        book = row.book_values[0]
        within = book / RATIO_FACTOR <= median <= book * RATIO_FACTOR
        ok = within and increasing >= INCREASING_SEEDS * len(draws)
        text = (
            f"{median:.1f}x (median of {len(draws)}; {min(ratios):.1f}-{max(ratios):.1f}x), "
            f"increasing in {increasing} of {len(draws)}"
        )
        return text, f"x{median / book:.2f} of the book's, {_yes(ok)}", seeds
    layers = list(zip(*draws, strict=True))
    text = (
        ", ".join(f"{statistics.median(v):.3g} ({min(v):.3g}-{max(v):.3g})" for v in layers)
        + f" (median, range of {len(draws)})"
    )
    inside = [min(v) <= book <= max(v) for v, book in zip(layers, row.book_values, strict=True)]
    return text, "the book's in the range: " + ", ".join(_yes(i) for i in inside), seeds


def book_table(sweeps: Mapping[str, ExperimentRuns]) -> list[str]:
    """The book's rows against nnexp's, as markdown lines (RESULTS.md and the README share it)."""
    lines = [
        "| row | setting | on | book | nnexp | difference, reproduced | seeds | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        sweep = sweeps[row.experiment]
        if row.statistic in ("initial", "ratio", "trained"):
            text, judged, seeds = speed_cells(row, sweep)
        else:
            text, peak, seeds = measured(row, sweep)
            judged = verdict(row, peak)
        lines.append(
            f"| {row.number} | {row.setting} (`experiment={row.experiment}`) | {row.split} | "
            f"{row.book_text} | {text} | {judged} | {seeds} | {sweep.seconds:.0f} s |"
        )
    return lines


def render(sweeps: Mapping[str, ExperimentRuns], study: StudyRuns, figures: Path, out: Path) -> str:
    rel = figures.relative_to(out)
    lines = [
        "# The book's MNIST results, reproduced",
        "",
        "Written by `make reproduce` (`python -m nnexp.book`) from the runs in the MLflow store: every",
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
        *chapter_5_section(rel),
        "## Learning curves",
        "",
    ]
    for name in sweeps:
        lines += [f"### `{name}`", "", f"![{name}]({rel / name / 'accuracy.png'})", ""]
    notes = out / "NOTES.md"
    if notes.exists():
        lines += ["## Notes", "", notes.read_text().strip(), ""]
    return "\n".join(lines) + "\n"


SPEED_FIGURE = "learning_speed_4_hidden_layers.png"  # the README's chapter-5 figure


def speed_figure(sweep: ExperimentRuns, figures: Path) -> Path:
    """The book's figure for [784,30,30,30,30,10]: its run of ``ch5_learning_speed`` alone."""
    (run,) = sweep.matching({"model.hidden": HIDDEN[4]})
    history = report.speed_history(sweep.client, run)
    title = "Speed of learning: full-batch gradient descent on 1,000 images"
    return plot_learning_speeds({_net(4): history}, figures / sweep.name / SPEED_FIGURE, title)


def chapter_5_section(rel: Path) -> list[str]:
    """RESULTS.md's chapter-5 figures: the speeds of learning as the nets train, and dC/db at the start."""
    name = "ch5_learning_speed"
    return [
        "## Chapter 5: the speed of learning of each hidden layer",
        "",
        "The speed of learning of hidden layer l is ||dC/db^l||, the norm of the cost's gradient with",
        "respect to the layer's biases, averaged over the first 1,000 training images, measured before",
        "training (epoch 0) and after each step of full-batch gradient descent on those images.",
        "",
        f"![speed of learning, 4 hidden layers]({rel / name / SPEED_FIGURE})",
        "",
        f"![speed of learning by depth]({rel / name / 'learning_speed.png'})",
        "",
        f"![dC/db before training]({rel / name / 'bias_gradients.png'})",
        "",
    ]


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
    speed_figure(sweeps["ch5_learning_speed"], figures)
    text = render(sweeps, load_study(client, SEARCH, figures), figures, args.out)
    update_readme(args.readme, book_table(sweeps))
    (args.out / "RESULTS.md").write_text(text)
    print(f"wrote {args.out / 'RESULTS.md'} and the results table of {args.readme}")
    return 0


if __name__ == "__main__":
    process.prepare()
    sys.exit(main())
