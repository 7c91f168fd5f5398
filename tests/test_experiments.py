"""The named experiments of experiments/: each composes into valid jobs, each runs, each is in RESULTS.md."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from nnexp import book, config

FOLDER = Path(__file__).resolve().parents[1] / "experiments"
EXPERIMENTS = sorted(p.stem for p in FOLDER.glob("*.yaml"))
BOOK = sorted(name for name in EXPERIMENTS if name != "smoke")
# Chapter 6's conv nets: their 5x5 kernels do not fit the digits' 8x8 images twice
CONV = sorted(
    name for name in EXPERIMENTS if "override /model: conv" in (FOLDER / f"{name}.yaml").read_text()
)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_job_of_every_experiment_composes_and_validates(composer, name):
    """Every setting of its sweep, once: jobs that differ only in their seed validate alike."""
    jobs = config.sweep_jobs(composer(f"experiment={name}"))
    settings = {frozenset(o for o in job if not o.startswith("seed=")): job for job in jobs}
    for overrides in settings.values():
        c = config.validate(composer(*overrides))
        assert c.tracking.experiment == (name if name in BOOK else "nnexp")
    assert len(jobs) >= 1


def trains_for_an_epoch(store: str, nnexp_command, names: list[str], *overrides: str) -> None:
    """One job per experiment of ``names`` (lightning-hydra-template's ``experiment=glob(*)``)."""
    result = nnexp_command("-m", f"experiment={','.join(names)}", "train.epochs=1", *overrides)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    ran = sorted(run.data.tags["nnexp.overrides"].split()[0].removeprefix("experiment=") for run in children)
    assert ran == names
    for run in children:
        assert run.info.status == "FINISHED", run.info.run_name
        assert run.data.metrics["epochs_run"] == 1


@pytest.mark.slow
def test_every_experiment_trains_for_an_epoch(store, nnexp_command):
    """On the digits: all but chapter 6's conv nets (below). 30 s, so in make test-full: make test
    composes and validates every job of every experiment (above), and tests each feature they use."""
    trains_for_an_epoch(
        store, nnexp_command, [name for name in EXPERIMENTS if name not in CONV], "data=digits"
    )


@pytest.mark.slow
@pytest.mark.mnist
def test_every_conv_experiment_trains_for_an_epoch_on_mnist(store, nnexp_command):
    """Chapter 6's conv nets on 100 MNIST images (500 where expanded), validated and tested in full."""
    assert len(CONV) == 6
    trains_for_an_epoch(store, nnexp_command, CONV, "data.train_size=100")


def test_chapter_1_rows_sweep_the_books_three_seeds_or_ten(composer):
    """Ten where one draw decides the row or the three land more than a point apart
    (experiments/RESULTS.md), the book's three elsewhere."""
    for name, seeds in (
        ("ch1_quadratic_30", 3),
        ("ch1_quadratic_100", book.SPREAD_SEEDS),
        ("ch1_learning_rate", book.SPREAD_SEEDS),
        ("ch1_learning_rate_large", book.SPREAD_SEEDS),
    ):
        jobs = config.sweep_jobs(composer(f"experiment={name}"))
        assert {frozenset(job) for job in jobs} == {
            frozenset({f"experiment={name}", f"seed={seed}"}) for seed in range(1, seeds + 1)
        }


def test_results_cover_every_book_experiment_and_the_rows_asked_for():
    covered = {row.experiment for row in book.ROWS} | set(book.BEYOND) | set(book.CONVENTIONS)
    assert covered == set(BOOK)
    assert {row.number for row in book.ROWS} >= {"1", "2", "3", "4", "6", "7", "9", "11", "12", "13"}


def test_row_filters_name_params_their_experiment_sets(composer):
    """Rows 3 and 4 pick their runs by params: those params must be what their experiments set."""
    for row in book.ROWS:
        if row.where:
            cfg = composer(f"experiment={row.experiment}")
            assert {key: str(OmegaConf.select(cfg, key)) for key in row.where} == dict(row.where), row
