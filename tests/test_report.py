"""The report on a small real sweep run by the harness, plus label and error cases on hand-made runs.

The real sweep (two costs on the small digits data set, 3 epochs) is run once per module through the
command line, exactly as a user would (in this process: it is the command's result that matters here, not
its process), so these tests also check that the harness logs what the report reads (the SPEC's tracking
conventions).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from commands import run_or_fail
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from nnexp import report, runs, store
from nnexp.engine.history import bias_gradient, learning_speed
from nnexp.plots import plot_learning_curves, plot_metric

FILES = {"accuracy.png", "cost.png", "summary.csv", "summary.md"}
pytestmark = pytest.mark.xdist_group(name="report")  # the module's sweeps run once, on one worker


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A directory holding mlflow.db with one real two-run sweep over the cost."""
    cwd = tmp_path_factory.mktemp("sweep")
    run_or_fail(cwd, "-m", "cost=quadratic,crossentropy", "data=digits", "train.epochs=3")
    return cwd


@pytest.fixture
def in_sweep(sweep, monkeypatch) -> MlflowClient:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(sweep)
    return store.connect(store.store_uri())


def _parent(client: MlflowClient) -> str:
    exp = client.get_experiment_by_name("nnexp")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`nnexp.sweep` = 'true'")
    return parent.info.run_id


def test_default_report_of_latest_sweep(in_sweep, sweep):
    assert report.main([]) == 0
    (out,) = (sweep / "reports").iterdir()
    assert out.name == "nnexp_sweep_cost=quadratic_crossentropy_data=digits_train.epochs=3"
    assert {p.name for p in out.iterdir()} == FILES
    table = pd.read_csv(out / "summary.csv")
    assert sorted(table["cost"]) == ["crossentropy", "quadratic"]  # the one override that differs
    assert "data" not in table and "train.epochs" not in table  # common overrides are not columns
    assert list(table["status"]) == ["finished", "finished"]
    assert list(table["epochs"]) == [3, 3]
    assert table["best validation %"].is_monotonic_decreasing
    assert ((table["best validation %"] >= table["final validation %"]) & (table["best test %"] <= 100)).all()
    assert table["best epoch"].between(1, 3).all() and (table["wall s"] > 0).all()
    markdown = (out / "summary.md").read_text().splitlines()
    assert markdown[2].startswith("| run | cost | status | best validation %")
    assert len(markdown) == 2 + 2 + 2  # title, blank, header, rule, one line per run
    best = table["best validation %"].iloc[0]
    assert f"| {best:.2f} |" in markdown[4]


def test_labels_name_the_differing_override(in_sweep):
    children = [run.info.run_id for run in runs.children(in_sweep, in_sweep.get_run(_parent(in_sweep)))]
    _, labels = report.run_labels([in_sweep.get_run(run_id) for run_id in children])
    assert sorted(labels) == ["cost=crossentropy", "cost=quadratic"]


def test_sweep_by_id_and_runs_and_out(in_sweep, sweep):
    parent = _parent(in_sweep)
    assert report.main(["--sweep", parent, "--out", "by_id"]) == 0
    assert report.main(["--experiment", "nnexp", "--sweep", "latest", "--out", "latest"]) == 0
    by_id, latest = (pd.read_csv(sweep / d / "summary.csv") for d in ("by_id", "latest"))
    pd.testing.assert_frame_equal(by_id, latest)
    first = by_id["run_id"].iloc[0]
    assert report.main(["--runs", first, "--out", "one"]) == 0
    assert list(pd.read_csv(sweep / "one" / "summary.csv")["run_id"]) == [first]


def test_write_report_api_and_the_sweep_parent_carries_the_report(in_sweep, tmp_path):
    parent = _parent(in_sweep)
    children = [run.info.run_id for run in runs.children(in_sweep, in_sweep.get_run(parent))]
    paths = report.write_report(in_sweep, children, tmp_path / "r", "costs")
    assert {p.name for p in paths} == FILES and all(p.stat().st_size > 0 for p in paths)
    assert {artifact.path for artifact in in_sweep.list_artifacts(parent)} == FILES | {"jobs.json"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "0" * 32], "unknown sweep run id '00000000000000000000000000000000'"),
        (["--experiment", "nope"], "unknown experiment 'nope' (available: Default, nnexp)"),
        (["--runs", "nope"], "unknown run id 'nope'"),
    ],
)
def test_bad_selection_is_a_one_line_error(in_sweep, capsys, args, message):
    assert report.main(args) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"python -m nnexp.report: error: {message}") and error.count("\n") == 1


def test_child_run_is_not_a_sweep(in_sweep, capsys):
    child = [run.info.run_id for run in runs.children(in_sweep, in_sweep.get_run(_parent(in_sweep)))][0]
    assert report.main(["--sweep", child]) == 1
    assert "is not a sweep: it has no child runs" in capsys.readouterr().err


def test_missing_store_is_an_error_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert report.main([]) == 1
    assert (
        capsys.readouterr().err
        == f"python -m nnexp.report: error: no MLflow store at {tmp_path.resolve() / 'mlflow.db'} "
        "(run `python -m nnexp.run` here first, or set MLFLOW_TRACKING_URI)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_store_without_runs(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("empty")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    capsys.readouterr()  # MLflow's own log lines from creating the store
    assert report.main([]) == 1
    assert capsys.readouterr().err.startswith("python -m nnexp.report: error: no runs in the MLflow store")
    assert report.main(["--experiment", "empty"]) == 1
    assert capsys.readouterr().err == "python -m nnexp.report: error: no runs in experiment 'empty'\n"


# --- hand-made runs: cases a small real sweep does not produce -------------------------------------------


def _log_run(
    client: MlflowClient, exp_id: str, overrides: str, params: dict[str, str], accuracies: list[float]
) -> str:
    """A run as the harness logs it; a NaN accuracy ends it as a failed (diverged) run at that epoch."""
    run_id = client.create_run(exp_id, tags={"nnexp.overrides": overrides}).info.run_id
    metrics = [
        Metric(f"{split}_{kind}", value, 0, epoch)
        for epoch, acc in enumerate(accuracies, 1)
        if not math.isnan(acc)
        for split in ("train", "validation", "test")
        for kind, value in (("accuracy", acc), ("cost", 1 - acc))
    ]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    failed = any(math.isnan(acc) for acc in accuracies)
    if failed:
        client.set_tag(run_id, "failure_reason", "cost became nan at epoch 3")
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def hand_store(tmp_path_factory) -> MlflowClient:
    """One store for the module's hand-made runs: a new sqlite store takes seconds to set up."""
    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('hand') / 'mlflow.db'}")


@pytest.fixture
def client(hand_store, request) -> tuple[MlflowClient, str]:
    """The store of hand-made runs, and an experiment of this test's own in it."""
    return hand_store, hand_store.create_experiment(request.node.name)


def test_labels_fall_back_to_differing_params_then_run_names(client):
    client, exp = client
    ids = [_log_run(client, exp, "seed=1", {"train.eta": eta, "seed": "1"}, [0.5]) for eta in ("0.1", "3.0")]
    ids.append(_log_run(client, exp, "seed=1", {"train.eta": "3.0", "seed": "1"}, [0.5]))
    values, labels = report.run_labels([client.get_run(i) for i in ids])
    assert values == [{"train.eta": "0.1"}, {"train.eta": "3.0"}, {"train.eta": "3.0"}]
    names = [client.get_run(i).info.run_name for i in ids[1:]]
    assert labels == ["train.eta=0.1", f"train.eta=3.0 ({names[0]})", f"train.eta=3.0 ({names[1]})"]


def test_override_missing_in_some_runs_shows_as_default(client):
    client, exp = client
    ids = [_log_run(client, exp, overrides, {}, [0.5]) for overrides in ("cost=quadratic eta=1", "eta=1")]
    assert report.run_labels([client.get_run(i) for i in ids])[1] == ["cost=quadratic", "cost=(default)"]


def test_failed_run_is_plotted_and_summarized(client, tmp_path):
    client, exp = client
    ids = [
        _log_run(client, exp, "train.eta=0.5", {}, [0.6, 0.8, 0.9]),
        _log_run(client, exp, "train.eta=100", {}, [0.2, 0.1, math.nan]),
    ]
    report.write_report(client, ids, tmp_path / "out", "diverged")
    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(table["train.eta"]) == [0.5, 100]
    assert list(table["status"]) == ["finished", "failed"]
    assert list(table["epochs"]) == [3, 2] and list(table["best epoch"]) == [3, 1]
    assert list(table["failure"].fillna("")) == ["", "cost became nan at epoch 3"]
    assert list(table["best validation %"].round(6)) == [90.0, 20.0]


def test_plots_skip_non_finite_values_and_reject_unknown_metrics(tmp_path):
    history = pd.DataFrame(
        {"epoch": [1, 2, 3]}
        | {
            f"{split}_{kind}": [0.5, np.inf, np.nan]
            for split in ("train", "validation", "test")
            for kind in ("accuracy", "cost")
        }
    )
    assert plot_learning_curves({"a": history}, tmp_path / "lc.png", "t").stat().st_size > 0
    assert plot_metric({"a": history, "b": history}, "cost", tmp_path / "c.png", "t").exists()
    with pytest.raises(ValueError, match="unknown metric 'loss'"):
        plot_metric({"a": history}, "loss", tmp_path / "x.png", "t")


def test_runs_with_speeds_of_learning_get_chapter_5s_figures(client, tmp_path):
    """A run that logged learning_speed_* (from step 0) and epoch 0's bias gradients gets a panel of
    speeds and the bar figure; a run without them is in the accuracy figures only."""
    client, exp = client
    ids = [_log_run(client, exp, f"model.hidden={h}", {}, [0.5, 0.6]) for h in ("[30,30]", "[30]")]
    speeds = [
        Metric(learning_speed(layer), 0.1 * layer / (1 + epoch), 0, epoch)
        for layer in (1, 2)
        for epoch in (0, 1, 2)
    ]
    shown = [
        Metric(bias_gradient(layer, j), (-1) ** j * 0.01 * layer, 0, 0)
        for layer in (1, 2)
        for j in range(1, 7)
    ]
    client.log_batch(ids[0], metrics=speeds + shown)
    paths = report.write_report(client, ids, tmp_path / "out", "depth")
    assert {p.name for p in paths} == FILES | {"learning_speed.png", "bias_gradients.png"}
    history = report.speed_history(client, client.get_run(ids[0]))
    assert list(history.columns) == ["epoch", "learning_speed_1", "learning_speed_2"]
    assert list(history["epoch"]) == [0, 1, 2] and history["learning_speed_2"].iloc[0] == pytest.approx(0.2)
    assert report.speed_history(client, client.get_run(ids[1])).empty
    assert list(pd.read_csv(tmp_path / "out" / "summary.csv")["epochs"]) == [2, 2]  # epoch 0 trained nothing
