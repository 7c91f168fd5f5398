"""The book reproduced, end to end, as `make reproduce` does it: slow (tens of minutes on 2 cores:
chapter 1's rows alone are 45 runs of 30 epochs), so marked ``slow`` and run by `make test-full`, not by
`make test` or CI."""

import subprocess
import sys
from pathlib import Path

import pytest

from nnexp import book, store

# one worker reproduces the book, once (without the group both workers did: 29 + 23 minutes)
pytestmark = [pytest.mark.slow, pytest.mark.mnist, pytest.mark.xdist_group(name="reproduce")]

EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[1] / "experiments").glob("ch[1-5]_*.yaml")
)  # as make reproduce
REFERENCE = Path(__file__).resolve().parents[1] / "experiments" / "results" / book.REFERENCE_CSV


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """Every book experiment swept into a fresh store, then RESULTS.md written from it."""
    where = tmp_path_factory.mktemp("reproduce")
    for name in EXPERIMENTS:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "nnexp.run",
                "-m",
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                f"experiment={name}",
            ],
            cwd=where,
            check=False,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "nnexp.run", "-m", f"search={book.SEARCH}"],
        cwd=where,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    readme = where / "README.md"
    readme.write_text(f"{book.README_START}\n{book.README_END}\n")
    done = subprocess.run(
        [sys.executable, "-m", "nnexp.book", "--out", str(where / "experiments"), "--readme", str(readme)],
        cwd=where,
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    client = store.connect(f"sqlite:///{where / 'mlflow.db'}")
    names = {row.experiment for row in book.CHAPTERS_1_TO_5}
    sweeps = {name: book.load_sweep(client, name, where / "figures") for name in names}
    return where, sweeps, book.load_study(client, book.SEARCH, where / "figures")


def test_results_md_has_every_row(reproduced):
    where, _, _ = reproduced
    text = (where / "experiments" / "RESULTS.md").read_text()
    for row in book.ROWS:
        assert f"| {row.number} | {row.setting}" in text
    assert "| 1 |" in (where / "README.md").read_text()


@pytest.mark.parametrize(
    "row", [r for r in book.CHAPTERS_1_TO_5 if r.book is not None], ids=lambda r: f"row{r.number}-{r.split}"
)
def test_row_is_within_tolerance_of_the_book_or_its_own_spread(reproduced, row):
    _, sweeps, _ = reproduced
    verdict = book.peak_cells(row, sweeps[row.experiment], book.Reference.read(REFERENCE)).verdict
    assert verdict.endswith((" pp, yes", " pp, within the book's own spread")), verdict


def test_rows_3_and_4_stay_near_chance_at_extreme_learning_rates(reproduced):
    _, sweeps, _ = reproduced
    for row in book.ROWS:
        if row.where and row.where["train.eta"] == "100.0":
            sweep = sweeps[row.experiment]
            assert all(sweep.peak(run, row.split) < 15.0 for run in sweep.of_row(row))


def test_the_search_beats_the_target_with_pruning(reproduced):
    """search=ch3_eta_lmbda, 20 trials of 30 epochs on MNIST: best validation accuracy >= 96.3%, while
    pruning keeps the epochs trained to <= 65% of 20 x 30."""
    where, _, study = reproduced
    assert len(study.trials) == 20
    assert study.parent.data.metrics["best_validation_accuracy"] >= 0.963
    assert sum(trial.data.metrics["epochs_run"] for trial in study.trials) <= 0.65 * 20 * 30
    assert "| nnexp's search, trial " in (where / "experiments" / "RESULTS.md").read_text()
