"""SGD, monitoring, stopping rules and reproducibility, on the small offline digits set."""

import numpy as np
import pytest

from nnexp.engine import DivergenceError, Network, checkpoint, data, sgd, summarize
from nnexp.engine import history as h
from nnexp.engine.training import TrainingState

BACKENDS = ["numpy", "numba"]

KEYS = [
    "epoch",
    "train_cost",
    "train_accuracy",
    "validation_cost",
    "validation_accuracy",
    "test_cost",
    "test_accuracy",
    "epoch_seconds",
    "eta",
]


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def train(digits, epochs=3, seed=0, regularizer="l2", **kwargs):
    net = Network([digits.n_inputs, 20, 10], regularizer=regularizer, lmbda=1.0, p=0.3, seed=seed)
    return net, sgd(net, digits, epochs=epochs, batch_size=10, eta=kwargs.pop("eta", 0.5), **kwargs)


def test_learns_and_reports_every_epoch(digits):
    seen = []
    _, history = train(digits, epochs=5, on_epoch=seen.append)
    assert [m["epoch"] for m in history] == [1, 2, 3, 4, 5]
    assert seen == history
    assert list(history[0]) == KEYS
    assert history[-1]["validation_accuracy"] > 0.85
    assert history[-1]["train_cost"] < history[0]["train_cost"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("regularizer", ["none", "l2", "l1", "dropout"])
def test_same_seed_same_numbers_bit_for_bit(digits, regularizer, backend):
    def curves(seed):
        _, history = train(digits, seed=seed, regularizer=regularizer, momentum=0.5, backend=backend)
        return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in history]

    assert curves(3) == curves(3)
    assert curves(3) != curves(4)


def test_monitor_chooses_the_splits(digits):
    _, history = train(digits, epochs=1, monitor=("validation",))
    assert set(history[0]) == {"epoch", "validation_cost", "validation_accuracy", "epoch_seconds", "eta"}


def test_early_stopping_ends_after_n_epochs_without_improvement(digits):
    # eta so small that validation accuracy soon stops improving
    _, history = train(digits, epochs=200, eta=1e-6, early_stopping=2)
    accuracies = [m["validation_accuracy"] for m in history]
    assert len(history) < 200
    best = accuracies.index(max(accuracies))
    assert len(history) == best + 1 + 2


def test_halving_schedule_halves_eta_and_stops_at_eta_over_128(digits):
    _, history = train(digits, epochs=500, eta=1e-6, schedule="halve", early_stopping=1)
    etas = sorted({m["eta"] for m in history}, reverse=True)
    assert etas == [1e-6 / 2**k for k in range(7)]
    assert len(history) < 500


def test_divergence_is_detected(digits):
    # eta lmbda / n = 50 makes weight decay w <- (1 - 50) w: the weights blow up within an epoch
    net = Network([digits.n_inputs, 20, 10], regularizer="l2", lmbda=1e5)
    with pytest.raises(DivergenceError, match=r"_cost became (nan|inf) at epoch 1") as caught:
        sgd(net, digits, epochs=3, batch_size=10, eta=0.5)
    assert caught.value.epoch == 1


def test_float64_and_float32_agree_closely(digits):
    def accuracy(dtype):
        net = Network([digits.n_inputs, 20, 10], seed=0, dtype=dtype)
        sgd(net, data.load("digits", dtype=dtype), epochs=2, batch_size=10, eta=0.5)
        return net.evaluate(digits.test.X, digits.test.y, 1000)[1]

    assert abs(accuracy("float32") - accuracy("float64")) < 0.02


def test_unknown_schedule_is_named(digits):
    with pytest.raises(ValueError, match=r"unknown schedule 'cosine' \(accepted: constant, halve\)"):
        train(digits, schedule="cosine")


@pytest.mark.mnist
def test_real_mnist_one_epoch_reaches_90_percent():
    mnist = data.load("mnist")
    net = Network([784, 30, 10], cost="crossentropy", seed=0)
    history = sgd(net, mnist, epochs=1, batch_size=10, eta=0.5, monitor=("validation",))
    assert history[0]["validation_accuracy"] >= 0.90


def without_seconds(history):
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in history]


@pytest.mark.parametrize(
    "settings",
    [
        {"regularizer": "dropout", "momentum": 0.5},
        {"regularizer": "l2", "schedule": "halve", "early_stopping": 1, "eta": 3.0},
    ],
    ids=["dropout-momentum", "halving"],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_training_goes_on_from_a_checkpoint_bit_for_bit(digits, tmp_path, settings, backend):
    """Stop after epoch 3, save, load into a fresh process's objects, go on to 8: the very numbers of a
    run that never stopped (the weights, the generator, the velocities, eta and the rule's counters)."""
    settings = dict(settings, backend=backend)
    eta = settings.pop("eta", 0.5)

    def fresh():
        return Network(
            [digits.n_inputs, 20, 10], regularizer=settings["regularizer"], lmbda=1.0, p=0.3, seed=7
        )

    options = {k: v for k, v in settings.items() if k != "regularizer"}
    whole_net = fresh()
    whole = sgd(whole_net, digits, epochs=8, batch_size=10, eta=eta, **options)

    first = TrainingState()
    net = fresh()
    sgd(net, digits, epochs=3, batch_size=10, eta=eta, state=first, **options)
    checkpoint.save(tmp_path / "ckpt.npz", net, first)
    net, state = checkpoint.load(tmp_path / "ckpt.npz")
    resumed = sgd(net, digits, epochs=8, batch_size=10, eta=eta, state=state, **options)

    assert without_seconds(resumed) == without_seconds(whole)
    assert len({m["eta"] for m in whole}) > 1 or "schedule" not in settings  # the halving happened
    for ours, theirs in zip(net.weights + net.biases, whole_net.weights + whole_net.biases, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_finished_state_trains_no_further(digits):
    net = Network([digits.n_inputs, 10, 10], seed=0)
    state = TrainingState()
    sgd(net, digits, epochs=200, batch_size=10, eta=1e-6, early_stopping=1, state=state)
    assert state.stopped and state.epoch < 200
    weights = [w.copy() for w in net.weights]
    assert (
        sgd(net, digits, epochs=200, batch_size=10, eta=1e-6, early_stopping=1, state=state) == state.history
    )
    for before, after in zip(weights, net.weights, strict=True):
        np.testing.assert_array_equal(before, after)


def test_the_summary_reports_the_test_accuracy_at_the_last_epoch_of_the_best_validation_accuracy():
    """Chapter 6's figure, network3's rule: validation chooses the epoch, ties going to the later one."""
    curves = [(0.90, 0.80), (0.95, 0.85), (0.95, 0.86), (0.94, 0.90)]
    history = [
        {h.EPOCH: epoch, h.key("validation", "accuracy"): v, h.key("test", "accuracy"): t}
        for epoch, (v, t) in enumerate(curves, start=1)
    ]
    summary = summarize(history)
    assert summary[h.BEST_EPOCH] == 3
    assert summary[h.TEST_ACCURACY_AT_BEST_EPOCH] == 0.86 and summary[h.BEST_TEST_ACCURACY] == 0.90
    assert h.TEST_ACCURACY_AT_BEST_EPOCH == "test_accuracy_at_best_epoch"
    assert h.TEST_ACCURACY_AT_BEST_EPOCH not in summarize(
        [{h.EPOCH: 1, h.key("validation", "accuracy"): 0.9}]
    )
