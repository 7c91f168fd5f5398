"""Mini-batch stochastic gradient descent, with the monitoring and stopping rules of chapter 3.

The engine reports each epoch's metrics to an ``on_epoch`` callback and knows nothing of where they
go; the harness uses the callback to log them.

An epoch shuffles the training set (or keeps it in order, as network3 does), then trains on it a
chunk of rows at a time (``train_epoch``).
Training on a chunk is the backend's part: ``train_chunk`` here in numpy, the book's algorithm as a
reader follows it, or ``fast.train_chunk``, the same steps compiled with numba (``BACKENDS``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nnexp.engine import components
from nnexp.engine.data import Dataset, Split
from nnexp.engine.history import (
    EPOCH,
    EPOCH_SECONDS,
    ETA,
    INITIAL,
    NEURONS_SHOWN,
    SPLITS,
    Metrics,
    bias_gradient,
    key,
    learning_speed,
)
from nnexp.engine.network import Array, Network, one_hot
from nnexp.engine.products import subtract

SCHEDULES = ("constant", "halve")
HALVINGS = 7  # the book's schedule stops when eta has dropped to eta/128 = eta/2^7
HALVING_PATIENCE = 10  # the halving schedule's n when early_stopping does not set one
BACKENDS = ("auto", "numpy", "numba")  # auto: numba when it can be imported, else numpy
# Rows gathered, and dropout masks drawn, at a time: one gather of a chunk replaces one per mini-batch,
# and costs 3 MB of MNIST images rather than the 157 MB of a shuffled copy of the whole training set.
CHUNK_ROWS = 1000
SPEED_IMAGES = 1000  # chapter 5 measures the speed of learning over the first 1,000 training images

# (net, train, rows, masks, batch_size, eta, momentum, velocities): SGD steps on a chunk of shuffled rows
TrainChunk = Callable[
    [Network, Split, Array, list[Array] | None, int, float, float, list[Array] | None], None
]


class DivergenceError(ArithmeticError):
    """A cost became NaN or infinite: training cannot recover, so the run stops here."""

    def __init__(self, epoch: int, metrics: Metrics):
        bad = next(k for k in costs(metrics) if not np.isfinite(metrics[k]))
        super().__init__(f"{bad} became {metrics[bad]} at epoch {epoch}")
        self.epoch = epoch
        self.metrics = metrics


@dataclass
class StoppingRule:
    """The book's no-improvement-in-n rule on validation accuracy (chapter 3, "Early stopping"), and
    the learning-rate schedule built on it: each time the rule fires, ``halve`` halves eta instead of
    stopping, and training stops when eta would drop to eta/128. ``patience`` None never fires."""

    patience: int | None
    halve: bool = False
    best: float = -1.0
    since_best: int = 0
    halvings: int = 0

    @classmethod
    def of(cls, schedule: str, early_stopping: int | None) -> StoppingRule:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r} (accepted: {', '.join(SCHEDULES)})")
        halve = schedule == "halve"
        return cls(early_stopping or (HALVING_PATIENCE if halve else None), halve)

    def after_epoch(self, validation_accuracy: float, eta: float) -> tuple[float, bool]:
        """(the eta of the next epoch, whether to stop now), given this epoch's validation accuracy."""
        if self.patience is None:
            return eta, False
        if validation_accuracy > self.best:
            self.best, self.since_best = validation_accuracy, 0
            return eta, False
        self.since_best += 1
        if self.since_best < self.patience:
            return eta, False
        if not self.halve or self.halvings + 1 == HALVINGS:
            return eta, True
        self.since_best, self.halvings = 0, self.halvings + 1
        return eta / 2, False


@dataclass
class TrainingState:
    """Where training stands between two epochs. With the network (its weights and random generator)
    it is everything ``sgd`` needs to go on exactly as if it had never stopped: pass the same object
    to ``sgd`` again, or save both with ``checkpoint.save`` and train on from ``checkpoint.load``.

    A fresh state is empty: ``sgd`` fills in eta and the stopping rule from its arguments.
    """

    epoch: int = 0  # epochs completed
    eta: float | None = None  # the learning rate of the next epoch (the halving schedule lowers it)
    rule: StoppingRule | None = None
    velocities: list[Array] | None = None  # momentum's, one per weight matrix then per bias vector
    history: list[Metrics] = field(default_factory=list)  # every completed epoch's metrics
    stopped: bool = False  # the stopping rule ended training

    def done(self, epochs: int) -> bool:
        """Whether training to ``epochs`` epochs has nothing left to do."""
        return self.stopped or self.epoch >= epochs


def sgd(
    net: Network,
    data: Dataset,
    epochs: int,
    batch_size: int,
    eta: float,
    momentum: float = 0.0,
    schedule: str = "constant",
    early_stopping: int | None = None,
    on_epoch: Callable[[Metrics], None] | None = None,
    monitor: Sequence[str] = SPLITS,
    state: TrainingState | None = None,
    backend: str = "auto",
    learning_speed: bool = False,
    order: str = "shuffled",
) -> list[Metrics]:
    """Train ``net`` on ``data.train`` by mini-batch stochastic gradient descent; return the list of
    each epoch's metrics (the history).

    - ``epochs``: how many passes over the training data, at most.
    - ``batch_size``: the examples averaged into each gradient step (the book's mini_batch_size).
    - ``eta``: the learning rate.
    - ``momentum`` mu: velocities v <- mu v - eta grad C, then w <- w + v (chapter 3); 0 is plain SGD.
    - ``schedule`` and ``early_stopping`` n: see ``StoppingRule``; with ``constant`` the rule stops
      training, with ``halve`` it halves eta (n defaults to 10 there).
    - ``on_epoch``: called with each epoch's metrics as soon as the epoch is done.
    - ``monitor``: the splits whose cost and accuracy each epoch reports.
    - ``state``: a ``TrainingState`` to continue from (``epochs`` is then the total to reach) and to
      keep up to date after every epoch, before ``on_epoch`` is called: what a checkpoint saves.
    - ``backend``: ``numpy``, ``numba`` (the same steps compiled: 2.6 times as fast on the book's
      [784, 30, 10] at mini-batch 10), or ``auto``, numba when it can be imported and has every layer
      and component of ``net`` (else numpy: conv layers train in numpy). Both draw the same random
      numbers, so they agree to round-off and a checkpoint written by one resumes on the other.
    - ``learning_speed``: each epoch also reports the speed of learning of every hidden layer
      (``learning_speeds`` on the first 1,000 training images, after the epoch's step), and training
      from scratch first reports epoch 0: the speeds and the bias gradients of the first six neurons of
      each hidden layer (``initial_metrics``) of the network as it starts. Epoch 0 goes into the
      history and to ``on_epoch`` like any epoch, so a checkpoint carries it and a resumed run never
      reports it twice; it holds no cost, accuracy, seconds or eta, and summaries skip it
      (``history.training_epochs``). Measured between epochs in numpy, whatever the backend.
    - ``order``: the order of the examples in each epoch (``components.ORDERS``): ``shuffled`` afresh
      every epoch, or ``fixed``, the stored order, as network3.

    Raises ``DivergenceError`` when a cost becomes NaN or infinite.
    """
    state = TrainingState() if state is None else state
    state.eta = eta if state.eta is None else state.eta
    state.rule = StoppingRule.of(schedule, early_stopping) if state.rule is None else state.rule
    visiting = components.get(components.ORDERS, "mini-batch order", order)
    if state.rule.patience and "validation" not in monitor:
        raise ValueError("early stopping and the halving schedule watch validation accuracy: monitor it")
    if momentum and state.velocities is None:
        state.velocities = [np.zeros_like(p) for p in net.weights + net.biases]
    train_chunk = backend_for(net, backend)
    n = net.regularizer.divisor(len(data.train.y), batch_size)  # the n of the penalty's lmbda/n
    # A compiled backend is compiled (or loaded from its cache) on its first call: make it on no rows,
    # which draws no random number, so that the first epoch's seconds are training's alone.
    no_masks = net.dropout_masks(0)
    train_chunk(net, data.train, np.arange(0), no_masks, batch_size, eta, momentum, state.velocities)
    if learning_speed and state.epoch == 0 and not state.history and len(net.sizes) > 2:
        initial = initial_metrics(net, data.train)
        state.history.append(initial)
        if on_epoch is not None:
            on_epoch(initial)
    while not state.done(epochs):
        started = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is caught below, by the costs
            train_epoch(
                net, data.train, batch_size, state.eta, momentum, state.velocities, train_chunk, visiting
            )
            metrics = {EPOCH: state.epoch + 1, **evaluate(net, data, monitor, n)}
            if learning_speed:
                metrics.update(speed_metrics(bias_gradients(net, data.train)))
        metrics[EPOCH_SECONDS] = time.perf_counter() - started
        metrics[ETA] = state.eta
        if not all(np.isfinite(metrics[k]) for k in costs(metrics)):
            raise DivergenceError(state.epoch + 1, metrics)
        state.epoch += 1
        state.history.append(metrics)
        state.eta, state.stopped = state.rule.after_epoch(
            metrics.get(key("validation", "accuracy"), 0.0), state.eta
        )
        if on_epoch is not None:
            on_epoch(metrics)
    return state.history


def bias_gradients(net: Network, split: Split, n: int = SPEED_IMAGES) -> list[Array]:
    """dC/db^l ``(sizes[l],)`` of each hidden layer l, for the unregularized cost averaged over the first
    ``n`` images of ``split`` (all of them if it has fewer): BP3's mean of the error delta^l.

    Chapter 5 takes the norm of this mean (``learning_speeds``), not the mean of each image's norm: the
    per-image gradients point many ways and mostly cancel. The output layer's is left out, as the
    chapter leaves it out; no dropout mask is applied, the network is measured as it evaluates.
    """
    rows = np.arange(min(n, len(split.y)))
    X, Y = split.inputs(rows), one_hot(split.y[rows], net.sizes[-1], net.dtype)
    _, grad_b = net.backprop(X, Y, biases_only=True)
    return grad_b[:-1]


def learning_speeds(net: Network, split: Split, n: int = SPEED_IMAGES) -> list[float]:
    """Chapter 5's speed of learning of each hidden layer, the first hidden layer first: the Euclidean
    norm ||dC/db^l|| of ``bias_gradients`` over the first ``n`` images of ``split``. In a deep sigmoid
    net it falls by orders of magnitude from the last hidden layer to the first: each layer back
    multiplies the error by w sigma'(z), and sigma' is at most 1/4."""
    return [float(np.linalg.norm(g)) for g in bias_gradients(net, split, n)]


def speed_metrics(gradients: Sequence[Array]) -> Metrics:
    """The norms of the hidden layers' bias gradients, keyed ``learning_speed_1`` (the first) on."""
    return {learning_speed(l): float(np.linalg.norm(g)) for l, g in enumerate(gradients, 1)}


def initial_metrics(net: Network, train: Split) -> Metrics:
    """Epoch 0 of ``sgd(learning_speed=True)``: the speeds of learning of the network before training,
    and dC/db of the first ``NEURONS_SHOWN`` neurons of each hidden layer (the chapter's bar figure)."""
    gradients = bias_gradients(net, train)
    shown = {
        bias_gradient(l, j): float(g[j - 1])
        for l, g in enumerate(gradients, 1)
        for j in range(1, min(NEURONS_SHOWN, len(g)) + 1)
    }
    return {EPOCH: INITIAL, **speed_metrics(gradients), **shown}


def costs(metrics: Metrics) -> list[str]:
    """The keys of the costs an epoch's metrics hold: the values that divergence makes non-finite."""
    return [key(split, "cost") for split in SPLITS if key(split, "cost") in metrics]


def backend_for(net: Network, backend: str) -> TrainChunk:
    """The ``train_chunk`` of a backend name, checked against ``net`` (see ``sgd``)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (accepted: {', '.join(BACKENDS)})")
    if backend == "numpy":
        return train_chunk
    try:
        from nnexp.engine import fast  # imports numba: a second or so, paid only when training with it
    except ImportError:
        if backend == "numba":
            raise
        return train_chunk
    reason = fast.unsupported(net)
    if reason is None:
        return fast.train_chunk
    if backend == "numba":
        raise ValueError(f"{reason}: train with backend='numpy'")
    return train_chunk  # auto: a component the compiled code lacks trains in numpy


def train_epoch(
    net: Network,
    train: Split,
    batch_size: int,
    eta: float,
    momentum: float,
    velocities: list[Array] | None,
    train_chunk: TrainChunk,
    visiting: type[components.MiniBatchOrder] = components.Shuffled,
) -> None:
    """One pass over the training set in ``visiting``'s order (a fresh random one, by default), by
    mini-batches cut in that order.

    Its random numbers all come from ``net.rng``, whatever the backend: first the permutation, then,
    for dropout, one uniform draw per example and dropped unit (``Network.dropout_masks``), row i for
    the i-th example of the permutation, drawn a chunk at a time. The generator's state between two
    epochs is therefore all that a checkpoint needs to go on with the very same numbers.
    """
    n = len(train.y)
    order = visiting.order(net.rng, n)
    chunk = batch_size * max(1, CHUNK_ROWS // batch_size)  # whole mini-batches
    for start in range(0, n, chunk):
        rows = order[start : start + chunk]
        masks = net.dropout_masks(len(rows))
        train_chunk(net, train, rows, masks, batch_size, eta, momentum, velocities)


def train_chunk(
    net: Network,
    train: Split,
    rows: Array,
    masks: list[Array] | None,
    batch_size: int,
    eta: float,
    momentum: float,
    velocities: list[Array] | None,
) -> None:
    """The numpy backend: one step of ``update`` per mini-batch cut in order from ``rows`` (indices of
    training examples), each a slice of one gather of all the chunk's rows. ``masks`` are the dropout
    masks of the rows, if any."""
    X_rows, Y_rows = train.inputs(rows), one_hot(train.y[rows], net.sizes[-1], net.dtype)
    n = net.regularizer.divisor(len(train.y), batch_size)
    for k in range(0, len(rows), batch_size):
        batch = slice(k, k + batch_size)
        batch_masks = None if masks is None else [mask[batch] for mask in masks]
        update(net, X_rows[batch], Y_rows[batch], eta, n, momentum, velocities, batch_masks)


def evaluate(net: Network, data: Dataset, monitor: Sequence[str], n_train: int) -> Metrics:
    """Cost and accuracy on each monitored split, keyed as ``history.key`` names them (``n_train``: the
    n of the penalty's lmbda/n, ``regularizer.divisor``)."""
    metrics = {}
    for split in monitor:
        part = getattr(data, split)
        cost, accuracy = net.evaluate(part.pixels, part.y, n_train, scale=part.scale)
        metrics[key(split, "cost")], metrics[key(split, "accuracy")] = cost, accuracy
    return metrics


def update(
    net: Network,
    X: Array,
    Y: Array,
    eta: float,
    n: int,
    momentum: float = 0.0,
    velocities: list[Array] | None = None,
    masks: list[Array] | None = None,
) -> None:
    """One step of gradient descent on the mini-batch (X, Y), written as the book writes the
    regularized rule: the regularizer's decay of the weights, then the step down the gradient of the
    unregularized cost (with momentum, if any). n is the n of the penalty's lmbda/n (the size of the
    training set, or network3's number of mini-batches: ``regularizer.divisor``); ``masks`` are the
    dropout masks of the batch's rows (``Network.dropout_masks``), for a network with dropout."""
    steps_w, steps_b = net.backprop(X, Y, masks, scale=eta, factored=True)  # eta times the gradient
    for w in net.weights:
        net.regularizer.decay(w, eta, n)
    for i, (p, step) in enumerate(zip(net.weights + net.biases, steps_w + steps_b, strict=True)):
        if velocities is None:
            subtract(p, step)  # p -= step
        else:
            velocities[i] *= momentum
            subtract(velocities[i], step)
            p += velocities[i]
