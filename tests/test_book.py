"""RESULTS.md's machinery on a real (tiny) sweep; the full reproduction is marked slow. The sweeps run
through the command line, in this process."""

import pytest
from commands import run_or_fail

from nnexp import book, store
from nnexp.errors import NotFound, UserError

ROW_3, ROW_4 = (row for row in book.ROWS if row.experiment == "ch1_learning_rate")


@pytest.fixture(scope="module")
def learning_rate_sweep(tmp_path_factory):
    """experiment=ch1_learning_rate on the digits, 2 epochs: its four runs, read back as RESULTS.md does."""
    where = tmp_path_factory.mktemp("sweep")
    run_or_fail(where, "-m", "experiment=ch1_learning_rate", "data=digits", "train.epochs=2")
    client = store.connect(f"sqlite:///{where / 'mlflow.db'}")
    return book.load_sweep(client, "ch1_learning_rate", where / "figures"), where


def test_rows_pick_their_run_out_of_a_sweep_by_params(learning_rate_sweep):
    sweep, where = learning_rate_sweep
    assert len(sweep.runs) == 4
    assert [r.data.params["train.eta"] for r in sweep.matching(ROW_3.where)] == ["0.001"]
    assert [r.data.params["model.hidden"] for r in sweep.matching(ROW_4.where)] == ["[30]"]
    text, peak, seeds = book.measured(ROW_3, sweep)
    assert text.endswith(f"rising to {peak:.2f}%") and seeds == "0"
    assert (where / "figures" / "ch1_learning_rate" / "accuracy.png").stat().st_size > 10_000


def test_a_row_with_no_matching_run_is_named(learning_rate_sweep):
    sweep, _ = learning_rate_sweep
    row = book.Row("x", "ch1_learning_rate", "", "test", 1.0, "", {"train.eta": "7"})
    with pytest.raises(NotFound, match=r"no run with \{'train.eta': '7'\}"):
        book.measured(row, sweep)


def test_verdict_applies_the_tolerance():
    row = book.Row("1", "e", "", "test", 95.42, "")
    assert book.verdict(row, 95.0) == "-0.42 pp, yes"
    assert book.verdict(row, 94.9) == "-0.52 pp, **no**"
    assert book.verdict(ROW_4, 9.8) == "qualitative, see notes"


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
