"""The book's MNIST results against nnexp's: ``experiments/RESULTS.md``, the last step of ``make reproduce``.

``ROWS`` holds what the book reports (``../shared/book-results.md``), each row tied to the experiment
config that reproduces it. Everything nnexp's column shows is read back from the MLflow store: the
latest sweep of each experiment, whose runs ``make reproduce`` has just made. The book's own algorithm's
column, for chapter 1, is read from the CSV that ``benchmarks/reference_spread.py`` writes (too slow
for ``make reproduce``). Nothing measured is typed.

Chapter 6's rows (``CHAPTER_6``) take hours to days of CPU each, and this machine runs some of them: an
experiment with no sweep, or whose runs trained fewer epochs than the book's, is shown for what it is
("not run here", "5 of 60 epochs") and not judged. Every other row's experiment must have a sweep.

    python -m nnexp.book [--out experiments]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mlflow.entities import Run

from nnexp import errors, process, report, runs, store
from nnexp.engine.history import (
    BEST_TEST_ACCURACY,
    BEST_VALIDATION_ACCURACY,
    EPOCHS_RUN,
    INITIAL,
    OBJECTIVE,
    TEST_ACCURACY_AT_BEST_EPOCH,
    Metrics,
    best,
    key,
    learning_speed_keys,
    summarize,
)
from nnexp.errors import NotFound, UserError
from nnexp.outcome import trial_counts
from nnexp.plots import plot_learning_speeds
from nnexp.vocabulary import Status, Summary, Tag

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
TOLERANCE = 0.5  # percentage points: a row is reproduced when nnexp's peak is this close to the book's
CH6_TOLERANCE = 0.3  # percentage points: chapter 6's rows, whose figures lie tenths of a point apart

# Chapter 1 quotes the best of three runs (rows 1, 2) or one run (rows 3, 4) of settings whose runs differ
# from draw to draw. Its rows are swept over seeds 1, 2, 3 (the book's runs, each shown), or 1 to 10 where
# one draw decides the row: those show the spread of the ten, beside the book's own algorithm's.
BOOK_SEEDS = 3  # the first seeds of a chapter-1 sweep: the row as the book ran it
SPREAD_SEEDS = 10  # a sweep of this many seeds or more shows the spread
SPREAD_PP = 1.0  # percentage points: the book's seeds further apart than this and one draw decides the row
CHANCE = 12.0  # percent: "stuck near 10%" is no peak above the book's random guessing (10%) + 2 pp
# The book's network.py over ten seeds (half an hour of one core, so not in `make reproduce`): each seed's
# test accuracy after each epoch, under the results directory.
REFERENCE_CSV = Path("ch1_reference") / "seeds.csv"
REFERENCE_COMMAND = (
    "python benchmarks/reference_spread.py ch1_quadratic_100 ch1_learning_rate ch1_learning_rate_large"
)


@dataclass(frozen=True)
class Row:
    """One line of the book's table: its peak accuracy on ``split`` for the runs of ``experiment``
    whose params match ``where``. ``book_runs`` is how many runs the book's figure sums up: 3 where it
    quotes the best of three, 1 where it quotes one run.

    Chapter 5's rows each read one depth of a sweep over depths (``network``, the runs' ``model.hidden``)
    and compare the book's one run or one random draw with the spread of nnexp's seeds: ``statistic``
    says what they compare.

    Chapter 6's rows compare no peak (``statistic`` "at_best_epoch"): the test accuracy at the epoch of
    a run's best validation accuracy, of the best of ``book_runs`` runs by validation accuracy; row ch6.8
    ("ensemble") the vote of a sweep's networks. They are judged only where the runs trained the book's
    ``epochs``."""

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
    book_runs: int = 1
    epochs: int | None = None  # the epochs the book trained, where fewer make a row not comparable


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


CHAPTERS_1_TO_5 = (
    Row(
        "1",
        "ch1_quadratic_30",
        "[784,30,10] quadratic, large init, eta 3.0",
        "test",
        95.42,
        "95.42% (best of 3)",
        book_runs=3,
    ),
    Row(
        "2",
        "ch1_quadratic_100",
        "[784,100,10] quadratic, large init, eta 3.0",
        "test",
        96.59,
        "96.59% (best of 3)",
        book_runs=3,
    ),
    Row(
        "3",
        "ch1_learning_rate",
        "[784,100,10] quadratic, large init, eta 0.001",
        "test",
        21.42,
        "11.39% rising to 21.42%",
        {"model.hidden": "[100]", "train.eta": "0.001"},
        rising=True,
    ),
    Row(
        "4",
        "ch1_learning_rate_large",
        "[784,30,10] quadratic, large init, eta 100.0",
        "test",
        None,
        "stuck near 10%",
        {"model.hidden": "[30]", "train.eta": "100.0"},
        statistic="chance",
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


def _chapter_6() -> tuple[Row, ...]:
    """The book's table of chapter 6 (``../shared/book-results.md``), row 6 as the experiment runs it:
    two FC layers of 100."""
    rows = [
        Row(
            f"ch6.{number}",
            experiment,
            setting,
            "test",
            accuracy,
            f"{accuracy:.2f}% (best of 3)",
            statistic="at_best_epoch",
            tolerance=CH6_TOLERANCE,
            book_runs=3,
            epochs=epochs,
        )
        for number, experiment, setting, accuracy, epochs in (
            (1, "ch6_fc", "FC 784->100 sigmoid, softmax, eta 0.1", 97.80, 60),
            (2, "ch6_conv1", "conv-pool 20 5x5, FC 100, sigmoid, eta 0.1", 98.78, 60),
            (3, "ch6_conv2", "conv-pools 20 and 40 5x5, FC 100, sigmoid, eta 0.1", 99.06, 60),
            (4, "ch6_conv2_relu", "row ch6.3 with ReLU, eta 0.03, L2 lmbda 0.1", 99.23, 60),
            (5, "ch6_conv2_relu_expanded", "row ch6.4 on the expanded data (250,000 images)", 99.37, 60),
            (6, "ch6_conv2_relu_expanded_fc2", "row ch6.5 with two FC layers of 100", 99.43, 60),
            (7, "ch6_dropout", "row ch6.5, FC 1000 and 1000, dropout 0.5, no L2, 40 epochs", 99.60, 40),
        )
    ]
    vote = Row(
        "ch6.8",
        "ch6_dropout",
        "plurality vote of 5 networks of row ch6.7",
        "test",
        99.67,
        "99.67% (33 errors)",
        statistic="ensemble",
        tolerance=CH6_TOLERANCE,
        book_runs=5,
        epochs=40,
    )
    return (*rows, vote)


CHAPTER_6 = _chapter_6()
ROWS = CHAPTERS_1_TO_5 + CHAPTER_6

# network3's conventions set against nnexp's own on row ch6.1's network (minutes a run, where the other
# rows take hours): by experiment, the params of its runs as network3 ran them, the first line of its
# table; its other runs each change one or more of these. network3's L2 needs no runs: it is nnexp's
# with lmbda times the mini-batch size, step for step (L2_EQUIVALENCE, a test).
CONVENTIONS = {
    "ch6_fc_conventions": {"train.order": "fixed", "init.name": "network3"},
    "ch6_fc_dropout_scaling": {"regularization.scaling": "network3"},
}
L2_EQUIVALENCE = "tests/test_layers.py::test_network3s_l2_is_the_books_with_lmbda_times_the_batch_size"

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

    def summary(self, run: Run, epochs: int | None = None) -> Metrics:
        """The engine's summary of the run's first ``epochs``, or all: what it logged, for the epochs
        the store holds so far."""
        return summarize(self.histories[run.info.run_id].head(epochs).to_dict("records"))

    def peak(self, run: Run, split: str, epochs: int | None = None) -> float:
        """The run's peak accuracy on ``split`` (over its first ``epochs``, or all), in percent."""
        return 100 * self.summary(run, epochs)[best(key(split, "accuracy"))]

    def first(self, run: Run, split: str) -> float:
        """The run's accuracy on ``split`` after its first epoch, in percent."""
        return 100 * float(self.histories[run.info.run_id][key(split, "accuracy")].iloc[0])

    def epochs(self, run: Run) -> int:
        return len(self.histories[run.info.run_id])


def load_sweep(client, experiment: str, figures: Path) -> ExperimentRuns:
    """The latest sweep of ``experiment``, and its comparison figures written under ``figures``."""
    run_ids, _ = report.select_runs(client, experiment=experiment, sweep="latest")
    children = [client.get_run(run_id) for run_id in run_ids]
    parent = client.get_run(children[0].data.tags[Tag.PARENT])
    histories = {run_id: report.run_history(client, run_id) for run_id in run_ids}
    report.write_report(client, run_ids, figures / experiment, experiment)
    return ExperimentRuns(experiment, parent, children, histories, client)


def load_sweep_if_run(client, experiment: str, figures: Path) -> ExperimentRuns | None:
    """``load_sweep``, or None where the store holds no sweep of ``experiment``: a chapter-6 experiment
    this machine has not run."""
    try:
        return load_sweep(client, experiment, figures)
    except NotFound:
        return None


def wall_time(sweep: ExperimentRuns | None) -> str:
    """The sweep's wall time, in hours from an hour on (chapter 6's run for days); "unfinished" while its
    parent run has no end (a sweep under way, or killed before it could end its run), and how a sweep
    that did not finish ended (its runs may have been resumed alone since: their time is not in it)."""
    if sweep is None:
        return ""
    end = sweep.parent.info.end_time
    if end is None:
        return "unfinished"
    seconds = (end - sweep.parent.info.start_time) / 1000
    shown = f"{seconds:.0f} s" if seconds < 3600 else f"{seconds / 3600:.1f} h"
    status = sweep.parent.info.status
    return shown if status == Status.FINISHED else f"{shown}, then {status}"


class Cells(NamedTuple):
    """What the table says of one row, beside the book's figure."""

    nnexp: str
    reference: str  # the book's own algorithm, on the rows that show a spread
    verdict: str
    seeds: str


@dataclass(frozen=True)
class Spread:
    """The peak accuracies (percent) of one setting's seeds over their first ``epochs``: where one draw
    of it lands against another."""

    seeds: tuple[str, ...]
    peaks: tuple[float, ...]
    epochs: int

    @property
    def median(self) -> float:
        return statistics.median(self.peaks)

    def within(self, other: Spread) -> bool:
        """Each median lies within the other's range: as far as the seeds tell, the two spread alike."""
        ours_in_theirs = min(other.peaks) <= self.median <= max(other.peaks)
        return ours_in_theirs and min(self.peaks) <= other.median <= max(self.peaks)

    @property
    def at_chance(self) -> int:
        """How many seeds never rose above ``CHANCE`` (compared to the hundredth shown)."""
        return sum(round(peak, 2) <= CHANCE for peak in self.peaks)

    def text(self, row: Row) -> str:
        """Median, range, and how many seeds did what the book's run did: reach its figure (at most the
        row's tolerance below it), or, on a row stuck at chance, stay there."""
        if row.statistic == "chance":
            count = f"{self.at_chance} of {len(self.peaks)} at chance"
        else:
            reach = row.book - row.tolerance
            count = f"{sum(peak >= reach for peak in self.peaks)} of {len(self.peaks)} reach {reach:.2f}%"
        return f"median {self.median:.2f}% ({min(self.peaks):.2f}-{max(self.peaks):.2f}%), {count}"


@dataclass(frozen=True)
class Reference:
    """The book's own algorithm over seeds, as ``benchmarks/reference_spread.py`` writes it: by
    experiment, each seed's test accuracy (percent) after each epoch, in order, and the CPU seconds all
    its epochs took."""

    accuracies: Mapping[str, Mapping[int, Sequence[float]]]
    seconds: Mapping[str, float]

    @classmethod
    def read(cls, path: Path) -> Reference:
        """The CSV at ``path``; no experiment where there is no file."""
        accuracies: dict[str, dict[int, list[float]]] = {}
        seconds: dict[str, float] = {}
        if path.exists():
            with path.open(newline="") as f:
                for line in csv.DictReader(f):
                    name = line["experiment"]
                    seed = accuracies.setdefault(name, {}).setdefault(int(line["seed"]), [])
                    seed.append(100 * float(line["test_accuracy"]))
                    seconds[name] = seconds.get(name, 0.0) + float(line["epoch_cpu_seconds"])
        return cls(accuracies, seconds)

    def spread(self, experiment: str, epochs: int) -> Spread | None:
        """The peaks of the experiment's seeds over their first ``epochs``, or over fewer if that is all
        every seed ran; None if the file holds no seed of it."""
        seeds = self.accuracies.get(experiment)
        if not seeds:
            return None
        ran = min(epochs, *(len(accuracies) for accuracies in seeds.values()))
        peaks = tuple(max(accuracies[:ran]) for accuracies in seeds.values())
        return Spread(tuple(str(seed) for seed in seeds), peaks, ran)


def peak_cells(row: Row, sweep: ExperimentRuns, reference: Reference) -> Cells:
    """A row of peak accuracies: one run, chapter 5's median over depths' seeds, or chapter 1's seeds."""
    matching = sweep.of_row(row)
    seeds = _seed_list(matching)
    if row.statistic == "median":
        peaks = [sweep.peak(run, row.split) for run in matching]
        median = statistics.median(peaks)
        text = f"{median:.2f}% (median of {len(peaks)}; {min(peaks):.2f}-{max(peaks):.2f}%)"
        return Cells(text, "", verdict(row, median), seeds)
    if len(matching) > 1 or row.statistic == "chance":
        return seeded_cells(row, sweep, reference)
    (run,) = matching
    peak = sweep.peak(run, row.split)
    text = f"{sweep.first(run, row.split):.2f}% rising to {peak:.2f}%" if row.rising else f"{peak:.2f}%"
    return Cells(text, "", verdict(row, peak), seeds)


def seeded_cells(row: Row, sweep: ExperimentRuns, reference: Reference) -> Cells:
    """A chapter-1 row: its first ``BOOK_SEEDS`` seeds one by one, as the book ran it (their best where
    the book quotes the best of three, else their median: a typical draw), and, when the sweep has
    ``SPREAD_SEEDS`` seeds, the spread of all of them beside the book's own algorithm's."""
    runs = _by_seed(sweep.of_row(row))
    books = runs[:BOOK_SEEDS]
    peaks = [sweep.peak(run, row.split) for run in books]
    named = f"seeds {_seed_list(books)}"
    if row.rising:
        each = [
            f"{sweep.first(run, row.split):.2f}% rising to {p:.2f}%"
            for run, p in zip(books, peaks, strict=True)
        ]
    else:
        each = [f"{peak:.2f}%" for peak in peaks]
    if row.statistic == "chance":
        text, figure = f"peaks {', '.join(each)} ({named})", None
    else:
        figure = max(peaks) if row.book_runs > 1 else statistics.median(peaks)
        text = f"{figure:.2f}% ({'best' if row.book_runs > 1 else 'median'} of {named}: {', '.join(each)})"
    if len(runs) < SPREAD_SEEDS:
        if figure is None:
            seeds = tuple(run.data.tags.get(Tag.SEED, "?") for run in books)
            epochs = min(sweep.epochs(run) for run in books)
            return Cells(text, "", chance_verdict(Spread(seeds, tuple(peaks), epochs)), _seed_list(runs))
        judged = verdict(row, figure)
        if max(peaks) - min(peaks) > SPREAD_PP:
            judged += (
                f"; {named} {max(peaks) - min(peaks):.1f} pp apart: one draw decides, run {SPREAD_SEEDS}"
            )
        return Cells(text, "", judged, _seed_list(runs))
    ours, theirs, over = spreads(row, sweep, reference)
    text += f"; {len(runs)} seeds{over}: {ours.text(row)}"
    if theirs is None:
        their_text = "not run"
    else:
        minutes = reference.seconds[row.experiment] / 60
        their_text = f"{len(theirs.peaks)} seeds{over}: {theirs.text(row)} ({minutes:.0f} min of one core)"
    judged = chance_verdict(ours, theirs) if figure is None else verdict(row, figure, ours, theirs)
    return Cells(text, their_text, judged, _seed_list(runs))


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


def _by_seed(matching: Sequence[Run]) -> list[Run]:
    return sorted(matching, key=lambda run: _seed_order(run.data.tags.get(Tag.SEED, "?")))


def _seed_list(matching: Sequence[Run]) -> str:
    """The runs' seeds in order, three or more consecutive ones as a range: "1-10", "0", "4, 7"."""
    seeds = sorted((run.data.tags.get(Tag.SEED, "?") for run in matching), key=_seed_order)
    numbers = [int(seed) for seed in seeds if seed.isdigit()]
    if len(numbers) == len(seeds) >= 3 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(seeds)


def spreads(row: Row, sweep: ExperimentRuns, reference: Reference) -> tuple[Spread, Spread | None, str]:
    """nnexp's seeds and the book's algorithm's (None if not run) over the same first epochs: all the
    runs', or as many as the reference ran if fewer, then named (" over epochs 1-n") for the table."""
    runs = _by_seed(sweep.of_row(row))
    epochs = min(sweep.epochs(run) for run in runs)
    theirs = reference.spread(row.experiment, epochs)
    shared = theirs.epochs if theirs else epochs
    seeds = tuple(run.data.tags.get(Tag.SEED, "?") for run in runs)
    ours = Spread(seeds, tuple(sweep.peak(run, row.split, shared) for run in runs), shared)
    return ours, theirs, "" if shared == epochs else f" over epochs 1-{shared}"


def spread_section(
    rows: Sequence[Row], sweeps: Mapping[str, ExperimentRuns], reference: Reference
) -> list[str]:
    """RESULTS.md's seed-by-seed tables of the rows that show a spread: each seed's peak, nnexp's and the
    book's algorithm's, the book's figure (less the tolerance) in bold where a seed reaches it."""
    lines: list[str] = []
    for row in rows:
        if row.statistic != "peak" or len(sweeps[row.experiment].of_row(row)) < SPREAD_SEEDS:
            continue
        ours, theirs, over = spreads(row, sweeps[row.experiment], reference)
        theirs_by_seed = dict(zip(theirs.seeds, theirs.peaks, strict=True)) if theirs else {}
        reach = row.book - row.tolerance
        lines += [
            f"Row {row.number}, {row.setting}{over} (the book: {row.book_text}; bold: {reach:.2f}% or more):",
            "",
            "| seed | nnexp | the book's algorithm |",
            "|---|---|---|",
            *(
                f"| {seed} | {_marked(peak, reach)} | {_marked(theirs_by_seed.get(seed), reach)} |"
                for seed, peak in zip(ours.seeds, ours.peaks, strict=True)
            ),
            *(
                f"| {seed} | | {_marked(peak, reach)} |"
                for seed, peak in theirs_by_seed.items()
                if seed not in ours.seeds
            ),
            "",
        ]
    if not lines:
        return []
    return [
        "## Chapter 1: one draw against another",
        "",
        "The peak test accuracy of each seed of the rows that show a spread. A seed of the book's algorithm",
        "draws its own weights and mini-batches: a line pairs seed numbers, not draws.",
        "",
        *lines,
    ]


def _marked(peak: float | None, reach: float) -> str:
    """A seed's peak, in bold if it reaches ``reach``; nothing for a seed not run."""
    if peak is None:
        return ""
    return f"**{peak:.2f}%**" if peak >= reach else f"{peak:.2f}%"


def verdict(row: Row, figure: float, ours: Spread | None = None, theirs: Spread | None = None) -> str:
    """How far nnexp's figure is from the book's, and whether it reproduces it: within the row's
    tolerance; or, where the row sets nnexp's seeds (``ours``) beside the book's own algorithm's
    (``theirs``), a miss of a draw whose spread is the algorithm's ("within the book's own spread")."""
    if row.book is None:
        return "qualitative, see notes"
    difference = figure - row.book
    if abs(difference) <= row.tolerance:
        judged = "yes"
    elif ours is None or theirs is None:
        judged = "**no**"
    elif ours.within(theirs):
        judged = "within the book's own spread"
    else:
        judged = "**no**, outside the book's own spread"
    return f"{difference:+.2f} pp, {judged}"


def chance_verdict(ours: Spread, theirs: Spread | None = None) -> str:
    """Whether a row the book reports stuck near 10% stays there: every seed at chance; or, beside the
    book's own algorithm, seeds that leave it no more than the algorithm's own do."""
    if ours.at_chance == len(ours.peaks):
        judged = "yes"
    elif theirs is not None and ours.within(theirs):
        judged = "within the book's own spread"
    else:
        judged = "**no**"
    return f"at chance in {ours.at_chance} of {len(ours.peaks)} (no peak above {CHANCE:g}%), {judged}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def speed_cells(row: Row, sweep: ExperimentRuns) -> Cells:
    """A chapter-5 row of speeds of learning.

    ``initial``: each hidden layer's speed at epoch 0, the median over the seeds with its range, and
    whether the book's one draw lies in that range. ``ratio``: the last hidden layer's speed over the
    first's at epoch 0, reproduced when the median is within a factor 2 of the book's and the speeds
    increase from the first hidden layer to the last in 9 seeds of 10. ``trained``: the speeds after
    the book's last step (qualitative: one run, the shape of the curves is the result).
    """
    matching = sweep.of_row(row)
    seeds = _seed_list(matching)
    if row.statistic == "trained":
        (run,) = matching
        speeds = sweep.speeds(run, BOOK_LAST_EPOCH)
        ratio, book_ratio = speeds[-1] / speeds[0], row.book_values[-1] / row.book_values[0]
        text = ", ".join(f"{v:.2g}" for v in speeds)
        return Cells(text, "", f"qualitative; last over first {ratio:.0f}x (book {book_ratio:.0f}x)", seeds)
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
        return Cells(text, "", f"x{median / book:.2f} of the book's, {_yes(ok)}", seeds)
    layers = list(zip(*draws, strict=True))
    text = (
        ", ".join(f"{statistics.median(v):.3g} ({min(v):.3g}-{max(v):.3g})" for v in layers)
        + f" (median, range of {len(draws)})"
    )
    inside = [min(v) <= book <= max(v) for v, book in zip(layers, row.book_values, strict=True)]
    return Cells(text, "", "the book's in the range: " + ", ".join(_yes(i) for i in inside), seeds)


def chapter_6_cells(row: Row, sweep: ExperimentRuns | None) -> Cells:
    """A chapter-6 row as the book reports it: of the first ``book_runs`` seeds, the one with the best
    validation accuracy (the first, on ties), and its test accuracy at the epoch of that accuracy, each
    seed's beside it; from the row's sweep if this machine ran one (None: "not run here")."""
    if sweep is None:
        return Cells("not run here", "", "not comparable: no sweep", "")
    if row.statistic == "ensemble":
        return ensemble_cells(row, sweep)
    books = _by_seed(sweep.of_row(row))[: row.book_runs]
    summaries = [sweep.summary(run) for run in books]
    named = f"seeds {_seed_list(books)}"
    trained = [(s, run) for s, run in zip(summaries, books, strict=True) if TEST_ACCURACY_AT_BEST_EPOCH in s]
    if not trained:
        judged = _not_comparable(row, sweep, books, len(books))
        return Cells(f"no epoch yet ({named})", "", judged, _seed_list(books))
    summary, chosen = max(trained, key=lambda pair: pair[0][BEST_VALIDATION_ACCURACY])
    figure = 100 * summary[TEST_ACCURACY_AT_BEST_EPOCH]
    each = ", ".join(
        f"{100 * s[TEST_ACCURACY_AT_BEST_EPOCH]:.2f}%" if TEST_ACCURACY_AT_BEST_EPOCH in s else "no epoch"
        for s in summaries
    )
    text = f"{figure:.2f}% (seed {chosen.data.tags.get(Tag.SEED, '?')}, best validation of {named}: {each})"
    judged = _not_comparable(row, sweep, books, len(books)) or verdict(row, figure)
    return Cells(text, "", judged, _seed_list(books))


def ensemble_cells(row: Row, sweep: ExperimentRuns) -> Cells:
    """Row ch6.8: the vote of the sweep's networks on the test set, which ``python -m nnexp.ensemble``
    logs on the sweep's parent run; its command, where it has not voted."""
    runs = _by_seed(sweep.of_row(row))
    metrics = sweep.parent.data.metrics
    if Summary.ENSEMBLE_TEST_ACCURACY not in metrics:
        command = f"`python -m nnexp.ensemble --sweep {sweep.parent.info.run_id}`"
        return Cells(f"not voted: {command}", "", "not comparable: not voted", _seed_list(runs))
    accuracy, voters = metrics[Summary.ENSEMBLE_TEST_ACCURACY], int(metrics[Summary.ENSEMBLE_VOTERS])
    wrong = int(metrics[Summary.ENSEMBLE_TEST_ERRORS])
    text = f"{100 * accuracy:.2f}% ({wrong} errors, the vote of {voters} networks)"
    judged = _not_comparable(row, sweep, runs, voters) or verdict(row, 100 * accuracy)
    return Cells(text, "", judged, _seed_list(runs))


def _not_comparable(row: Row, sweep: ExperimentRuns, runs: Sequence[Run], count: int) -> str:
    """Why a chapter-6 row cannot be set against the book's figure, "" if it can: ``count`` runs are
    fewer than the book's (a sweep under way), or ``runs`` trained fewer epochs than the book's (cut
    short to try the row, or under way)."""
    epochs = min((sweep.epochs(run) for run in runs), default=0)
    lacking = [f"{count} of {row.book_runs} runs"] if count < row.book_runs else []
    lacking += [f"{epochs} of {row.epochs} epochs"] if epochs < row.epochs else []
    return f"not comparable: {', '.join(lacking)}" if lacking else ""


def book_table(rows: Sequence[Row], sweeps: Mapping[str, ExperimentRuns], reference: Reference) -> list[str]:
    """The book's rows against nnexp's, as markdown lines (RESULTS.md's tables; the README quotes
    chapters 1 to 5's). A chapter-6 row's experiment may have no sweep in ``sweeps``."""
    lines = [
        "| row | setting | on | book | nnexp | the book's algorithm | difference, reproduced | seeds "
        "| wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        sweep = sweeps.get(row.experiment)
        if row.statistic in ("at_best_epoch", "ensemble"):
            cells = chapter_6_cells(row, sweep)
        elif row.statistic in ("initial", "ratio", "trained"):
            cells = speed_cells(row, sweep)
        else:
            cells = peak_cells(row, sweep, reference)
        lines.append(
            f"| {row.number} | {row.setting} (`experiment={row.experiment}`) | {row.split} | "
            f"{row.book_text} | {cells.nnexp} | {cells.reference} | {cells.verdict} | {cells.seeds} | "
            f"{wall_time(sweep)} |"
        )
    return lines


def render(
    table: Sequence[str],
    sweeps: Mapping[str, ExperimentRuns],
    reference: Reference,
    study: StudyRuns,
    figures: Path,
    out: Path,
) -> str:
    rel = figures.relative_to(out)
    lines = [
        "# The book's MNIST results, reproduced",
        "",
        "Written by `make reproduce` (`python -m nnexp.book`) from the runs in the MLflow store: every",
        "nnexp figure below is measured. The book's figures are from `../shared/book-results.md`: the",
        f"**peak** accuracy over a run's epochs. A row is reproduced when nnexp's peak is within {TOLERANCE}",
        "percentage points (pp) of the book's. Chapter 6 reports another figure: see its section.",
        "",
        "Chapter 1 quotes the best of three runs (rows 1, 2) or one run (rows 3, 4) of settings whose",
        f"runs differ from draw to draw. Its rows run seeds 1 to {BOOK_SEEDS}, each shown, and set their",
        "best (rows 1, 2) or their median, a typical draw (row 3), against the book's. Where one draw",
        f"decides the row (rows 2, 3) or these seeds land more than {SPREAD_PP:g} pp apart (row 4), the",
        f"sweep runs seeds 1 to {SPREAD_SEEDS}, and the row shows their median, range and how many reach the",
        f"book's figure (at most {TOLERANCE} pp below it) beside the same for the book's own algorithm:",
        "`benchmarks/reference_network.py`, the book's network.py in float64 with its sigmoid and chapter",
        "1's N(0, 1) weights and biases, over ten seeds of its own (their own draws, not nnexp's), each",
        "mini-batch's step in chapter 2's matrix form (the per-example loop's steps but for the order of",
        "the sums over the examples, and several times as fast). Its seeds took",
        f"{sum(reference.seconds.values()) / 60:.0f} min of one core, so `make reproduce` reads them from",
        f"`{(rel / REFERENCE_CSV).as_posix()}`, which this command writes:",
        "",
        f"    {REFERENCE_COMMAND}",
        "",
        "A row that misses the book's figure is **within the book's own spread** when nnexp's median",
        "over its seeds lies in the range of the book's algorithm's, and theirs in nnexp's. Row 4's",
        '"stuck near 10%" is measured: a seed is at chance when its test accuracy never rises above',
        f"{CHANCE:g}%, 2 pp over random guessing (answering the test set's most frequent digit, 1, for every",
        "image scores 11.35%).",
        "",
        *table,
        "",
        *spread_section(CHAPTERS_1_TO_5, sweeps, reference),
        *chapter_6_section(sweeps, reference),
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
                f"{sweep.peak(run, 'test'):.2f}% | {len(history)} | {wall_time(sweep)} |"
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


def chapter_6_section(sweeps: Mapping[str, ExperimentRuns], reference: Reference) -> list[str]:
    """RESULTS.md's chapter 6: its figure, which is no peak, and its rows, as far as this machine ran them."""
    first, vote = CHAPTER_6[0], CHAPTER_6[-1]
    return [
        "## Chapter 6: convolutional networks",
        "",
        "Chapter 6's figure is no peak: network3.py measures the validation accuracy after every epoch and",
        "keeps the test accuracy of the last epoch with the best validation accuracy, so the test set never",
        "chooses the epoch, and the book quotes the best of three runs by validation accuracy, not by test.",
        f"nnexp's cell is that figure for the seed of seeds 1 to {first.book_runs} with the best validation",
        f"accuracy, then each seed's figure; a row is reproduced within {CH6_TOLERANCE} pp of the book's.",
        "Rows ch6.5 to ch6.8 train on 250,000 images, hours to days of CPU a run, and this machine runs the",
        'chapter only in part: a row whose experiment has no sweep in the store says "not run here", and one',
        "whose runs are fewer than the book's or trained fewer epochs shows what they reached and is not",
        f"compared. Row ch6.8 is the plurality vote of the networks of seeds 1 to {vote.book_runs} of",
        f"`experiment={vote.experiment}`, which",
        "`python -m nnexp.ensemble --sweep <the sweep's run id>` logs on the sweep's run. The wall time is",
        "the whole sweep's, all its runs.",
        "",
        *book_table(CHAPTER_6, sweeps, reference),
        "",
        *conventions_section(sweeps),
    ]


def conventions_section(sweeps: Mapping[str, ExperimentRuns]) -> list[str]:
    """What each of network3's conventions does to a row: chapter 6's figure over each setting's seeds,
    network3's setting first, then nnexp's, by the difference of their medians."""
    lines = [
        "### network3's conventions, one at a time",
        "",
        "network3.py takes its mini-batches in the same order every epoch, draws its own initial weights",
        "and scales dropout in evaluation; nnexp shuffles every epoch, draws N(0, 1/n_in) weights (`scaled`)",
        "and scales dropout in training (`inverted`) unless told otherwise. Each setting below is row",
        "ch6.1's network (FC 100, sigmoid, softmax, eta 0.1, 60 epochs) over the same seeds; the figure is",
        "chapter 6's, the test accuracy at the epoch of the best validation accuracy, its median (range).",
        "network3's L2 (`regularization=l2_network3`) is nnexp's `l2` with lmbda times the mini-batch size,",
        f"step for step, a unit of lmbda and not another network (`{L2_EQUIVALENCE}`).",
        "Against network3's setting: the difference of the medians, and how many of the setting's seeds",
        "land above network3's median (about half would, were the choice to make no difference).",
        "",
        "| experiment | setting | test % at best epoch, median (range) | seeds | against network3's "
        "| wall time |",
        "|---|---|---|---|---|---|",
    ]
    for name, network3 in CONVENTIONS.items():
        lines += convention_lines(name, network3, sweeps.get(name))
    return [*lines, ""]


def convention_lines(name: str, network3: Mapping[str, str], sweep: ExperimentRuns | None) -> list[str]:
    """One line per setting of ``network3``'s params among the sweep's runs, network3's first; a run
    counts once it has trained an epoch."""
    if sweep is None:
        return [f"| `{name}` | not run here: `python -m nnexp.run -m experiment={name}` |  |  |  |  |"]
    settings: dict[tuple[str, ...], list[Run]] = {tuple(network3.values()): []}
    for run in _by_seed(sweep.runs):
        settings.setdefault(tuple(run.data.params.get(k, "?") for k in network3), []).append(run)
    lines: list[str] = []
    theirs = None
    for values, setting in settings.items():
        summaries = [sweep.summary(run) for run in setting]
        figures = [
            100 * s[TEST_ACCURACY_AT_BEST_EPOCH] for s in summaries if TEST_ACCURACY_AT_BEST_EPOCH in s
        ]
        median = statistics.median(figures) if figures else None
        if not lines:
            theirs, against = median, "network3's"
        elif median is None or theirs is None:
            against = ""
        else:
            above = sum(figure > theirs for figure in figures)
            against = f"{median - theirs:+.2f} pp, {above} of {len(figures)} above"
        shown = " ".join(f"{k.removesuffix('.name')}={v}" for k, v in zip(network3, values, strict=True))
        spread = f"{median:.2f}% ({min(figures):.2f}-{max(figures):.2f}%)" if figures else "no epoch yet"
        seeds = _seed_list(setting)
        lines.append(f"| `{name}` | {shown} | {spread} | {seeds} | {against} | {wall_time(sweep)} |")
    return lines


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
    names = dict.fromkeys([row.experiment for row in CHAPTERS_1_TO_5] + list(BEYOND))
    sweeps = {name: load_sweep(client, name, figures) for name in names}
    for name in dict.fromkeys([*(row.experiment for row in CHAPTER_6), *CONVENTIONS]):
        if (sweep := load_sweep_if_run(client, name, figures)) is not None:
            sweeps[name] = sweep
    speed_figure(sweeps["ch5_learning_speed"], figures)
    reference = Reference.read(figures / REFERENCE_CSV)
    table = book_table(CHAPTERS_1_TO_5, sweeps, reference)
    text = render(table, sweeps, reference, load_study(client, SEARCH, figures), figures, args.out)
    update_readme(args.readme, table)
    (args.out / "RESULTS.md").write_text(text)
    print(f"wrote {args.out / 'RESULTS.md'} and the results table of {args.readme}")
    return 0


if __name__ == "__main__":
    process.prepare()
    sys.exit(main())
