"""Chapter 5's speed of learning: reported by ``sgd`` from epoch 0, logged by the harness, carried by
checkpoints and resumes bit for bit; the book's speeds at initialization (slow). The report's figures
of them are tested in tests/test_report.py."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from nnexp import config
from nnexp.engine import Network, checkpoint, data, learning_speeds, sgd, summarize
from nnexp.engine.history import (
    EPOCH,
    EPOCHS_RUN,
    NEURONS_SHOWN,
    bias_gradient,
    initial_bias_gradients,
    learning_speed,
    learning_speed_keys,
)
from nnexp.engine.training import BACKENDS, TrainingState
from nnexp.tracking import TrackedRun

SIZES = [64, 20, 15, 10]  # the digits' 8x8 pixels, two hidden layers


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def train(digits, epochs, state=None, backend="numpy", on_epoch=None):
    net = Network(SIZES, regularizer="l2", lmbda=5.0, seed=3)
    options = dict(batch_size=10, eta=0.5, learning_speed=True, backend=backend, on_epoch=on_epoch)
    return net, sgd(net, digits, epochs, state=state, **options)


def without_seconds(history):
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in history]


def test_epoch_0_reports_the_untrained_net_then_every_epoch_its_speeds(digits):
    seen = []
    untrained = Network(SIZES, regularizer="l2", lmbda=5.0, seed=3)
    net, history = train(digits, epochs=3, on_epoch=seen.append)
    assert seen == history and [m[EPOCH] for m in history] == [0, 1, 2, 3]
    speeds = [learning_speed(1), learning_speed(2)]
    shown = [bias_gradient(layer, j) for layer in (1, 2) for j in range(1, NEURONS_SHOWN + 1)]
    assert list(history[0]) == [EPOCH, *speeds, *shown]  # no cost, accuracy, seconds or eta
    assert [history[0][k] for k in speeds] == learning_speeds(untrained, digits.train)
    assert initial_bias_gradients(history[0])[1][:2] == [history[0][bias_gradient(2, j)] for j in (1, 2)]
    assert all(learning_speed_keys(m) == speeds for m in history)
    assert [history[-1][k] for k in speeds] == learning_speeds(net, digits.train)
    assert summarize(history)[EPOCHS_RUN] == 3  # epoch 0 trained nothing


def test_measuring_changes_no_training_number(digits):
    net = Network(SIZES, regularizer="l2", lmbda=5.0, seed=3)
    plain = sgd(net, digits, 3, batch_size=10, eta=0.5, backend="numpy")
    _, measured = train(digits, epochs=3)
    trained = [{k: v for k, v in m.items() if not learning_speed_keys([k])} for m in measured[1:]]
    assert without_seconds(trained) == without_seconds(plain)


@pytest.mark.parametrize("backend", BACKENDS)
def test_speeds_go_on_from_a_checkpoint_bit_for_bit(digits, tmp_path, backend):
    _, whole = train(digits, epochs=5, backend=backend)
    state = TrainingState()
    net, _ = train(digits, epochs=2, state=state, backend=backend)
    checkpoint.save(tmp_path / "ckpt.npz", net, state)
    net, state = checkpoint.load(tmp_path / "ckpt.npz")
    seen = []
    resumed = sgd(
        net, digits, 5, 10, 0.5, learning_speed=True, state=state, backend=backend, on_epoch=seen.append
    )
    assert [m[EPOCH] for m in seen] == [3, 4, 5]  # epoch 0 came back in the checkpoint, not reported again
    assert without_seconds(resumed) == without_seconds(whole)


def test_a_net_without_hidden_layers_has_no_speeds(digits):
    history = sgd(Network([64, 10], seed=0), digits, 1, 10, 0.5, learning_speed=True)
    assert [m[EPOCH] for m in history] == [1] and not learning_speed_keys(history[0])


def curves(client: MlflowClient, run_id: str, keys) -> dict[str, list[tuple[int, float]]]:
    return {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in keys}


def test_the_harness_logs_speeds_from_step_0_and_a_resumed_run_matches(store, nnexp_command, composer):
    """``train.learning_speed=true``: learning_speed_1 and _2 at steps 0 to the last epoch, epoch 0's bias
    gradients, a figure; trained further in the same run, the curves are those of the engine trained
    without a stop on the same config, bit for bit, each step logged once."""
    run = ("data=digits", "model.hidden=[20,15]", "train.learning_speed=true", "train.backend=numpy")
    assert nnexp_command(*run, "train.epochs=2").returncode == 0
    client = MlflowClient(store)
    (first,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    keys = [learning_speed(1), learning_speed(2)]
    assert [step for step, _ in curves(client, first.info.run_id, keys)[keys[0]]] == [0, 1, 2]
    assert first.data.metrics[EPOCHS_RUN] == 2 and bias_gradient(2, 6) in first.data.metrics
    assert "learning_curves.png" in {a.path for a in client.list_artifacts(first.info.run_id)}

    assert nnexp_command(f"resume={first.info.run_id}", "train.epochs=4").returncode == 0
    c = config.validate(composer(*run, "train.epochs=4"))
    digits = data.load("digits")
    whole = sgd(
        config.build_network(c),
        digits,
        4,
        c.train.batch_size,
        c.train.eta,
        backend="numpy",
        learning_speed=True,
    )
    assert curves(client, first.info.run_id, keys) == {k: [(m[EPOCH], m[k]) for m in whole] for k in keys}


@pytest.mark.slow
@pytest.mark.mnist
def test_the_books_speeds_at_initialization_over_ten_seeds():
    """The chapter's nets at initialization, ten seeds each: the last hidden layer's speed over the
    first's is within a factor 2 of the book's (4.5x, 24x, 95x), and the speeds increase from the first
    hidden layer to the last in at least 9 seeds of 10."""
    mnist = data.load("mnist")
    for hidden, book in ((2, 4.5), (3, 24.0), (4, 95.0)):
        draws = [learning_speeds(Network([784, *[30] * hidden, 10], seed=s), mnist.train) for s in range(10)]
        ratio = np.median([speeds[-1] / speeds[0] for speeds in draws])
        assert book / 2 <= ratio <= book * 2, (hidden, ratio)
        assert sum(all(np.diff(speeds) > 0) for speeds in draws) >= 9, (hidden, draws)


def test_a_resume_logs_epoch_0_once_when_the_checkpoint_has_it_and_the_store_not(store):
    """Killed between epoch 0's checkpoint and its logging: taken up, the run logs it, and only once."""
    client = MlflowClient(store)
    run = client.create_run(client.create_experiment("speeds"))
    initial = {EPOCH: 0, learning_speed(1): 0.01, learning_speed(2): 0.1}
    for _ in range(2):
        TrackedRun.reopen(client, client.get_run(run.info.run_id), [initial], 3)
    logged = client.get_metric_history(run.info.run_id, learning_speed(2))
    assert [(m.step, m.value) for m in logged] == [(0, 0.1)]
