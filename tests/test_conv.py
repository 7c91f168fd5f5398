"""Chapter 6's conv nets through the harness, as a user meets them: ``model=conv`` trained, logged,
served as a model, taken up again and reported, like any run. On the 8x8 digits, with one small
conv-pool layer (the book's 5x5 kernels twice do not fit 8x8 images), in seconds."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from nnexp import config, report
from nnexp.engine import Network, data, sgd
from nnexp.engine.history import BEST_EPOCH, TEST_ACCURACY_AT_BEST_EPOCH

CONV = (
    "model=conv",
    "data=digits",
    "model.conv=[{filters:4,kernel:3,pool:2}]",
    "model.hidden=[16]",
    "cost=loglikelihood",
    "activation=relu",
    "init=network3",
    "regularization=l2_network3",
    "train.eta=0.1",
    "train.order=fixed",
)


def runs_of(store: str) -> list:
    client = MlflowClient(store)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["start_time"])


KEYS = ("train_accuracy", "validation_accuracy", "test_accuracy", "train_cost")


def accuracies(store: str, run_id: str) -> dict[str, list[float]]:
    client = MlflowClient(store)
    return {key: [m.value for m in client.get_metric_history(run_id, key)] for key in KEYS}


def test_a_conv_run_is_logged_served_reported_and_trained_further_bit_for_bit(
    tmp_path, store, nnexp_command, composer
):
    result = nnexp_command(*CONV, "train.epochs=2")
    assert result.returncode == 0, result.stderr
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.conv"] == "[{filters:4,kernel:3,pool:2}]"  # as the override wrote it
    metrics, history = run.data.metrics, accuracies(store, run.info.run_id)
    best_epoch = int(metrics[BEST_EPOCH])
    assert metrics[TEST_ACCURACY_AT_BEST_EPOCH] == history["test_accuracy"][best_epoch - 1]

    digits = data.load("digits")
    test = digits.test
    net = Network.load(MlflowClient(store).download_artifacts(run.info.run_id, "network.npz", str(tmp_path)))
    assert net.layered and net.input_shape == (1, 8, 8)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    predicted = model.predict(test.X)  # rows of 64 pixels, as any model of nnexp's takes them
    assert np.array_equal(predicted, net.predict(test.X))
    assert np.mean(predicted == test.y) == pytest.approx(metrics["final_test_accuracy"])
    assert len(model.metadata.signature.inputs.inputs) == 64  # a column per pixel
    assert np.array_equal(np.asarray(model.predict(pd.DataFrame(test.X[:5]))).ravel(), predicted[:5])

    assert report.main(["--runs", run.info.run_id, "--out", str(tmp_path / "report")]) == 0
    column = pd.read_csv(tmp_path / "report" / "summary.csv")["test % at best epoch"]
    assert column.iloc[0] == pytest.approx(100 * metrics[TEST_ACCURACY_AT_BEST_EPOCH])

    # trained further, it is the engine's network of its config trained for 3 epochs straight: its
    # checkpoint holds every conv layer's parameters, and the fixed order goes on where it was
    further = nnexp_command(f"resume={run.info.run_id}", "train.epochs=3")
    assert further.returncode == 0, further.stderr
    c = config.validate(composer(*CONV, "train.epochs=3"))
    straight = sgd(config.build_network(c), digits, 3, c.train.batch_size, c.train.eta, order=c.train.order)
    assert accuracies(store, run.info.run_id) == {key: [m[key] for m in straight] for key in KEYS}


@pytest.mark.slow
def test_a_search_chooses_among_conv_nets(store, nnexp_command):
    """A study over conv nets' eta and filters: each trial a conv run, the best named on the study's run."""
    search = ("-m", "search=ch3_eta_lmbda", "hydra.sweeper.n_trials=3", "train.epochs=2")
    filters = "model.conv=choice([{filters:2,kernel:3,pool:2}],[{filters:4,kernel:3,pool:2}])"
    result = nnexp_command(*search, *CONV, filters)
    assert result.returncode == 0, result.stderr
    found = runs_of(store)
    (parent,) = [run for run in found if run.data.tags.get("nnexp.search")]
    trials = [run for run in found if run is not parent]
    assert len(trials) == 3 and all(run.info.status == "FINISHED" for run in trials)
    assert {run.data.params["model.conv"] for run in trials} <= {
        "[{filters:2,kernel:3,pool:2}]",
        "[{filters:4,kernel:3,pool:2}]",
    }
    best = max(trials, key=lambda run: run.data.metrics["best_validation_accuracy"])
    assert best.data.params["model.conv"] == parent.data.tags["nnexp.best.model.conv"]
    assert f"model.conv={parent.data.tags['nnexp.best.model.conv']}" in best.data.tags["nnexp.overrides"]
