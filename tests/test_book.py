"""RESULTS.md's machinery on a real (tiny) sweep; the full reproduction is marked slow. The sweeps run
through the command line, in this process."""

import copy
import csv
import dataclasses
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from commands import run_or_fail
from mlflow.entities import Run, RunInfo
from omegaconf import OmegaConf

from nnexp import book, store
from nnexp.engine import data
from nnexp.engine.history import BEST_VALIDATION_ACCURACY, TEST_ACCURACY_AT_BEST_EPOCH, key
from nnexp.errors import NotFound, UserError
from nnexp.vocabulary import Summary

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from reference_network import ReferenceNetwork, as_column_pairs  # noqa: E402

pytestmark = pytest.mark.xdist_group(name="book")  # the module's sweep runs once, on one worker

ROW_3, ROW_4 = (row for row in book.ROWS if row.number in ("3", "4"))
# Chapter 6's rows 1 and 8 read from the module's sweep: their statistic needs only runs that monitor
# validation and test (a chapter-6 sweep of its own would double the module's time)
CH6_ROW_1, CH6_ROW_8 = (
    dataclasses.replace(row, experiment=ROW_3.experiment) for row in (book.CHAPTER_6[0], book.CHAPTER_6[-1])
)


@pytest.fixture(scope="module")
def learning_rate_sweep(tmp_path_factory):
    """experiment=ch1_learning_rate (row 3) on the digits, seeds 1-3, 2 epochs, read back as RESULTS.md
    does."""
    where = tmp_path_factory.mktemp("sweep")
    run_or_fail(where, "-m", "experiment=ch1_learning_rate", "data=digits", "train.epochs=2", "seed=1,2,3")
    client = store.connect(f"sqlite:///{where / 'mlflow.db'}")
    return book.load_sweep(client, "ch1_learning_rate", where / "figures"), where


NO_REFERENCE = book.Reference({}, {})


def write_reference(path: Path, accuracies: dict[int, list[float]]) -> book.Reference:
    """A CSV as benchmarks/reference_spread.py writes it (seed -> test accuracy by epoch), read back."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["experiment", "seed", "epoch", "test_accuracy", "epoch_cpu_seconds"])
        for seed, by_epoch in accuracies.items():
            for epoch, accuracy in enumerate(by_epoch, start=1):
                writer.writerow([ROW_3.experiment, seed, epoch, accuracy, 1800.0])
    return book.Reference.read(path)


def test_chapter_1_rows_show_each_of_the_books_seeds(learning_rate_sweep):
    sweep, where = learning_rate_sweep
    assert [r.data.params["train.eta"] for r in sweep.matching(ROW_3.where)] == ["0.001"] * 3
    peaks = sorted(sweep.peak(run, "test") for run in sweep.runs)
    cells = book.peak_cells(ROW_3, sweep, NO_REFERENCE)  # the book ran one: the median is a typical draw
    assert cells.nnexp.startswith(f"{peaks[1]:.2f}% (median of seeds 1-3: ")
    assert cells.nnexp.count("rising to") == 3 and cells.seeds == "1-3" and cells.reference == ""
    best_of_3 = book.Row("2", ROW_3.experiment, "", "test", 90.0, "", book_runs=3)
    cells = book.peak_cells(best_of_3, sweep, NO_REFERENCE)
    assert cells.nnexp.startswith(f"{peaks[2]:.2f}% (best of seeds 1-3: ")
    assert cells.verdict.startswith(f"{peaks[2] - 90.0:+.2f} pp, **no**")
    assert (where / "figures" / "ch1_learning_rate" / "accuracy.png").stat().st_size > 10_000


def test_seeds_further_apart_than_a_point_call_for_ten(learning_rate_sweep, monkeypatch):
    sweep, _ = learning_rate_sweep
    peaks = [sweep.peak(run, "test") for run in sweep.runs]
    monkeypatch.setattr(book, "SPREAD_PP", max(peaks) - min(peaks) - 0.01)
    assert "pp apart: one draw decides, run 10" in book.peak_cells(ROW_3, sweep, NO_REFERENCE).verdict
    monkeypatch.setattr(book, "SPREAD_PP", max(peaks) - min(peaks))
    assert "apart" not in book.peak_cells(ROW_3, sweep, NO_REFERENCE).verdict


def test_a_spread_is_set_beside_the_books_algorithm(learning_rate_sweep, tmp_path, monkeypatch):
    """With SPREAD_SEEDS seeds a row shows both spreads, over the epochs both ran, and judges its miss
    by them."""
    sweep, _ = learning_rate_sweep
    monkeypatch.setattr(book, "SPREAD_SEEDS", 3)
    assert max(sweep.peak(run, "test") for run in sweep.runs) < 20.92  # 2 epochs: the row misses the book
    first = sorted(sweep.peak(run, "test", epochs=1) for run in sweep.runs)
    # the book's algorithm about where nnexp lands, one seed at the book's figure; seed 3 ran one epoch
    alike = write_reference(
        tmp_path / "alike.csv", {1: [first[0] / 100, 0.5], 2: [first[2] / 100, 0.5], 3: [0.25]}
    )
    cells = book.peak_cells(ROW_3, sweep, alike)
    assert (
        f"; 3 seeds over epochs 1-1: median {first[1]:.2f}% ({first[0]:.2f}-{first[2]:.2f}%), 0 of 3"
        in cells.nnexp
    )
    assert cells.reference == (
        f"3 seeds over epochs 1-1: median {first[2]:.2f}% ({first[0]:.2f}-25.00%), 1 of 3 reach 20.92% "
        "(150 min of one core)"
    )
    assert cells.verdict.endswith(" pp, within the book's own spread") and cells.seeds == "1-3"

    far = write_reference(tmp_path / "far.csv", {seed: [0.9, 0.95] for seed in (1, 2, 3)})
    cells = book.peak_cells(ROW_3, sweep, far)
    assert cells.reference.startswith("3 seeds: median 95.00% (95.00-95.00%), 3 of 3 reach 20.92%")
    assert cells.verdict.endswith(" pp, **no**, outside the book's own spread")
    lines = book.spread_section([ROW_3], {ROW_3.experiment: sweep}, far)
    for run in sweep.runs:
        assert f"| {run.data.tags['nnexp.seed']} | {sweep.peak(run, 'test'):.2f}% | **95.00%** |" in lines
    assert book.peak_cells(ROW_3, sweep, NO_REFERENCE).reference == "not run"


def test_a_row_at_chance_is_judged_by_its_peaks(learning_rate_sweep, tmp_path, monkeypatch):
    sweep, _ = learning_rate_sweep
    row = book.Row("4", ROW_3.experiment, "", "test", None, "stuck near 10%", statistic="chance")
    peaks = [sweep.peak(run, "test") for run in book._by_seed(sweep.runs)]
    monkeypatch.setattr(book, "CHANCE", max(peaks))
    cells = book.peak_cells(row, sweep, NO_REFERENCE)
    assert cells.nnexp == f"peaks {', '.join(f'{p:.2f}%' for p in peaks)} (seeds 1-3)"
    assert cells.verdict == f"at chance in 3 of 3 (no peak above {max(peaks):g}%), yes"
    monkeypatch.setattr(book, "CHANCE", min(peaks) - 0.01)
    assert book.peak_cells(row, sweep, NO_REFERENCE).verdict.endswith(
        "in 0 of 3 (no peak above " + f"{min(peaks) - 0.01:g}%), **no**"
    )
    # beside the book's algorithm, whose seeds leave chance as nnexp's do
    monkeypatch.setattr(book, "SPREAD_SEEDS", 3)
    alike = {seed: [0.0, peak / 100] for seed, peak in enumerate(peaks, start=1)}
    cells = book.peak_cells(row, sweep, write_reference(tmp_path / "chance.csv", alike))
    low, middle, high = sorted(peaks)
    assert (
        cells.reference
        == f"3 seeds: median {middle:.2f}% ({low:.2f}-{high:.2f}%), 0 of 3 at chance (180 min of one core)"
    )
    assert cells.verdict.endswith("), within the book's own spread")


def test_a_row_with_no_matching_run_is_named(learning_rate_sweep):
    sweep, _ = learning_rate_sweep
    row = book.Row("x", "ch1_learning_rate", "", "test", 1.0, "", {"train.eta": "7"})
    with pytest.raises(NotFound, match=r"no run with \{'train.eta': '7'\}"):
        book.peak_cells(row, sweep, NO_REFERENCE)


def test_verdict_applies_the_tolerance_then_the_spreads():
    row = book.Row("1", "e", "", "test", 95.42, "")
    assert book.verdict(row, 95.0) == "-0.42 pp, yes"
    assert book.verdict(row, 94.9) == "-0.52 pp, **no**"
    assert book.verdict(ROW_4, 9.8) == "qualitative, see notes"
    wide = book.Spread(("1", "2", "3"), (80.0, 85.0, 96.0), 30)
    narrow = book.Spread(("1", "2"), (84.0, 86.0), 30)
    assert book.verdict(row, 85.0, wide, narrow) == "-10.42 pp, within the book's own spread"
    low = book.Spread(("1", "2", "3"), (80.0, 81.0, 96.0), 30)  # its median below narrow's range
    assert book.verdict(row, 85.0, low, narrow) == "-10.42 pp, **no**, outside the book's own spread"


def test_seeds_read_as_ranges_where_they_run_on(learning_rate_sweep):
    sweep, _ = learning_rate_sweep
    assert book._seed_list(sweep.runs) == "1-3"
    assert book._seed_list(book._by_seed(sweep.runs)[::2]) == "1, 3"


def test_the_reference_refuses_what_the_books_network_py_is_not(tmp_path):
    out = tmp_path / "seeds.csv"
    done = subprocess.run(
        [sys.executable, REPO / "benchmarks" / "reference_spread.py", "ch3_l2_30", "--out", out],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "experiment=ch3_l2_30 has cost=crossentropy, regularization=l2: reference_network.py is chapter 1's "
        "network.py (quadratic cost, sigmoid, no regularization, plain SGD)\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.mnist
def test_the_reference_spread_takes_the_books_per_example_steps():
    """reference_spread.py trains chapter 1's network in chapter 2's matrix form: from the same weights,
    on the same mini-batches of MNIST, the per-example loop's steps to round-off."""
    pairs = as_column_pairs(data.load("mnist", train_size=1000, dtype="float64").train, one_hot_targets=True)
    loop = ReferenceNetwork([784, 100, 10], seed=7, init="large")
    matrix, start = copy.deepcopy(loop), copy.deepcopy(loop)
    for k in range(0, len(pairs), 10):
        loop.update_mini_batch(pairs[k : k + 10], 3.0)
        matrix.update_mini_batch_matrix(pairs[k : k + 10], 3.0)
    for ours, theirs in zip(matrix.weights + matrix.biases, loop.weights + loop.biases, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    assert not np.allclose(matrix.weights[0], start.weights[0])
    assert start.weights[0].std() > 0.9  # chapter 1's N(0, 1), not chapter 3's N(0, 1/784)
    assert ReferenceNetwork([784, 100, 10], seed=7).weights[0].std() < 0.1


@pytest.mark.slow
@pytest.mark.mnist
def test_the_reference_writes_what_the_book_reads(tmp_path):
    """benchmarks/reference_spread.py for one epoch of row 4's ten seeds: the book's network.py on MNIST."""
    out = tmp_path / "seeds.csv"
    script = REPO / "benchmarks" / "reference_spread.py"
    done = subprocess.run(
        [sys.executable, script, "ch1_learning_rate_large", "--epochs", "1", "--out", out],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    spread = book.Reference.read(out).spread("ch1_learning_rate_large", 30)
    assert spread.seeds == tuple(str(seed) for seed in range(1, 11)) and spread.epochs == 1
    assert all(5.0 < peak < 20.0 for peak in spread.peaks)  # eta 100: at chance, in percent


def test_chapter_6_takes_the_test_accuracy_of_the_seed_best_by_validation(learning_rate_sweep):
    """As each run logged it: the test accuracy at the epoch of its best validation accuracy."""
    sweep, _ = learning_rate_sweep
    runs = book._by_seed(sweep.runs)
    chosen = max(runs, key=lambda run: run.data.metrics[BEST_VALIDATION_ACCURACY])
    figure = 100 * chosen.data.metrics[TEST_ACCURACY_AT_BEST_EPOCH]
    each = ", ".join(f"{100 * run.data.metrics[TEST_ACCURACY_AT_BEST_EPOCH]:.2f}%" for run in runs)
    complete = dataclasses.replace(CH6_ROW_1, book=figure + 0.25, epochs=2)
    cells = book.chapter_6_cells(complete, sweep)
    seed = chosen.data.tags["nnexp.seed"]
    assert cells.nnexp == f"{figure:.2f}% (seed {seed}, best validation of seeds 1-3: {each})"
    assert cells.verdict == "-0.25 pp, yes" and cells.seeds == "1-3"
    assert book.chapter_6_cells(dataclasses.replace(complete, book=figure + 0.35), sweep).verdict.endswith(
        " pp, **no**"
    )
    # the seed with the lowest test accuracy, made best by validation at every epoch: chosen, at its last
    worst = min(runs, key=lambda run: sweep.peak(run, "test"))
    history = sweep.histories[worst.info.run_id].assign(**{key("validation", "accuracy"): 1.0})
    doctored = dataclasses.replace(sweep, histories={**sweep.histories, worst.info.run_id: history})
    last = 100 * history[key("test", "accuracy")].iloc[-1]
    assert book.chapter_6_cells(complete, doctored).nnexp.startswith(
        f"{last:.2f}% (seed {worst.data.tags['nnexp.seed']}, best validation of seeds 1-3: "
    )
    # row 7 reads the book's first seeds of a sweep of more
    assert (
        ", best validation of seeds 1, 2: "
        in book.chapter_6_cells(dataclasses.replace(complete, book_runs=2), sweep).nnexp
    )


def test_chapter_6_runs_short_of_the_books_epochs_are_not_compared(learning_rate_sweep):
    sweep, _ = learning_rate_sweep
    line = book.book_table([CH6_ROW_1], {ROW_3.experiment: sweep}, NO_REFERENCE)[-1]
    assert "| not comparable: 2 of 60 epochs | 1-3 | " in line and "yes" not in line
    assert line.endswith(f"| {book.wall_time(sweep)} |") and book.wall_time(sweep).endswith(" s")
    info = sweep.parent.info
    killed = RunInfo(
        info.run_id,
        info.experiment_id,
        info.user_id,
        "KILLED",
        info.start_time,
        info.end_time,
        info.lifecycle_stage,
    )
    stopped = dataclasses.replace(sweep, parent=Run(killed, sweep.parent.data))
    assert book.wall_time(stopped) == f"{book.wall_time(sweep)}, then KILLED"
    started = dataclasses.replace(sweep, histories={run: h.head(0) for run, h in sweep.histories.items()})
    assert book.chapter_6_cells(dataclasses.replace(CH6_ROW_1, book_runs=4), started) == book.Cells(
        "no epoch yet (seeds 1-3)", "", "not comparable: 3 of 4 runs, 0 of 60 epochs", "1-3"
    )


def test_a_chapter_6_experiment_not_run_here_is_said_so(learning_rate_sweep, tmp_path, monkeypatch, capsys):
    """... while chapters 1 to 5's experiments must each have a sweep."""
    _, where = learning_rate_sweep
    uri = f"sqlite:///{where / 'mlflow.db'}"
    assert book.load_sweep_if_run(store.connect(uri), "ch6_conv2", tmp_path) is None
    section = book.chapter_6_section({}, NO_REFERENCE)
    start = section.index(next(line for line in section if line.startswith("| row |")))
    rows = section[start + 2 : start + 2 + len(book.CHAPTER_6)]
    assert all("| not run here |  | not comparable: no sweep |  |  |" in row for row in rows)
    assert section[start + 2 + len(book.CHAPTER_6)] == ""
    assert [line for line in section if "| not run here: `python -m nnexp.run -m experiment=" in line] == [
        f"| `{name}` | not run here: `python -m nnexp.run -m experiment={name}` |  |  |  |  |"
        for name in book.CONVENTIONS
    ]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert book.main([]) == 1
    assert "unknown experiment 'ch1_quadratic_30'" in capsys.readouterr().err


def test_the_vote_is_read_from_the_sweeps_run(learning_rate_sweep):
    """As ``python -m nnexp.ensemble`` logs it on the sweep's parent run (here by hand: the module's
    sweep is the voters', and its snapshot, which the other tests read, stays as it was)."""
    sweep, where = learning_rate_sweep
    parent = sweep.parent.info.run_id
    assert book.chapter_6_cells(CH6_ROW_8, sweep) == book.Cells(
        f"not voted: `python -m nnexp.ensemble --sweep {parent}`", "", "not comparable: not voted", "1-3"
    )
    client = store.connect(f"sqlite:///{where / 'mlflow.db'}")
    client.log_metric(parent, Summary.ENSEMBLE_TEST_ACCURACY, 0.9961)
    client.log_metric(parent, Summary.ENSEMBLE_VOTERS, 3)
    client.log_metric(parent, Summary.ENSEMBLE_TEST_ERRORS, 39)
    voted = dataclasses.replace(sweep, parent=client.get_run(parent))
    cells = book.chapter_6_cells(CH6_ROW_8, voted)
    assert cells.nnexp == "99.61% (39 errors, the vote of 3 networks)"
    assert cells.verdict == "not comparable: 3 of 5 runs, 2 of 40 epochs"
    assert book.chapter_6_cells(dataclasses.replace(CH6_ROW_8, book_runs=3, epochs=2), voted).verdict == (
        "-0.06 pp, yes"
    )


def test_each_convention_is_set_against_network3s_over_its_seeds(learning_rate_sweep):
    """A setting is a value of the experiment's params, network3's first, each other by the difference
    of the medians and its seeds above network3's median. Here the params are the seeds themselves (one
    run a setting), then one that no run has."""
    sweep, _ = learning_rate_sweep
    figure = {
        run.data.tags["nnexp.seed"]: 100 * run.data.metrics[TEST_ACCURACY_AT_BEST_EPOCH] for run in sweep.runs
    }
    cells = [
        line.split(" | ")[1:5] for line in book.convention_lines("ch1_learning_rate", {"seed": "2"}, sweep)
    ]
    assert cells == [
        ["seed=2", f"{figure['2']:.2f}% ({figure['2']:.2f}-{figure['2']:.2f}%)", "2", "network3's"],
        [
            "seed=1",
            f"{figure['1']:.2f}% ({figure['1']:.2f}-{figure['1']:.2f}%)",
            "1",
            f"{figure['1'] - figure['2']:+.2f} pp, {int(figure['1'] > figure['2'])} of 1 above",
        ],
        [
            "seed=3",
            f"{figure['3']:.2f}% ({figure['3']:.2f}-{figure['3']:.2f}%)",
            "3",
            f"{figure['3'] - figure['2']:+.2f} pp, {int(figure['3'] > figure['2'])} of 1 above",
        ],
    ]
    network3, others = book.convention_lines("ch1_learning_rate", {"init.name": "network3"}, sweep)
    assert network3.split(" | ")[1:5] == ["init=network3", "no epoch yet", "", "network3's"]
    median, low, high = statistics.median(figure.values()), min(figure.values()), max(figure.values())
    drawn = f"init={sweep.runs[0].data.params['init.name']}"  # chapter 1's: large
    assert others.split(" | ")[1:5] == [drawn, f"{median:.2f}% ({low:.2f}-{high:.2f}%)", "1-3", ""]
    assert others.endswith(f"| {book.wall_time(sweep)} |")


def test_chapter_6_rows_judge_the_epochs_and_seeds_their_experiments_run():
    for row in book.CHAPTER_6:
        experiment = OmegaConf.load(REPO / "experiments" / f"{row.experiment}.yaml")
        assert row.epochs == experiment.train.epochs, row
        seeds = ",".join(str(seed) for seed in range(1, row.book_runs + 1))
        assert str(experiment.hydra.sweeper.params.seed).startswith(seeds), row


def test_readme_table_goes_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{book.README_START}\nold\n{book.README_END}\nafter\n")
    book.update_readme(readme, ["| a |", "|---|"])
    assert readme.read_text() == f"intro\n{book.README_START}\n| a |\n|---|\n{book.README_END}\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(UserError, match="lacks the markers"):
        book.update_readme(readme, [])


def test_missing_store_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert book.main([]) == 1
    assert capsys.readouterr().err.startswith("python -m nnexp.book: error: no MLflow store at")
    assert list(tmp_path.iterdir()) == []


def test_the_search_is_set_beside_the_books_hand_tuning(tmp_path, nnexp_command, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    done = nnexp_command(
        "-m", "search=ch3_eta_lmbda", "data=digits", "train.epochs=3", "hydra.sweeper.n_trials=3"
    )
    assert done.returncode == 0, done.stderr
    client = store.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    study = book.load_study(client, book.SEARCH, tmp_path / "figures")
    header, rule, by_hand, ours = book.search_table(study)
    assert by_hand.startswith("| the book, by hand (row 11) | 0.5 | 5.0 |") and "96.49%" in by_hand
    best = int(study.parent.data.metrics["best_trial"])
    assert ours.startswith(f"| nnexp's search, trial {best} |") and ours.count("|") == header.count("|")
    assert f"{100 * study.parent.data.metrics['best_validation_accuracy']:.2f}%" in ours
    assert "| 3 (" in ours and " of 9 (" in ours  # 3 trials of up to 3 epochs
    assert sorted(p.name for p in (tmp_path / "figures" / book.SEARCH).iterdir()) == sorted(
        book.SEARCH_FIGURES
    )
