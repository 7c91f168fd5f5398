"""Mini-batch stochastic gradient descent, with the monitoring and stopping rules of chapter 3.

The engine reports each epoch's metrics to an ``on_epoch`` callback and knows nothing of where they
go; the harness uses the callback to log them.
"""

import time

import numpy as np

from nnexp.network import one_hot

SCHEDULES = ("constant", "halve")
SPLITS = ("train", "validation", "test")
HALVINGS = 7  # the book's schedule stops when eta has dropped to eta/128 = eta/2^7


class DivergenceError(ArithmeticError):
    """A cost became NaN or infinite: training cannot recover, so the run stops here."""

    def __init__(self, epoch, metrics):
        bad = next(k for k, v in metrics.items() if k.endswith("_cost") and not np.isfinite(v))
        super().__init__(f"{bad} became {metrics[bad]} at epoch {epoch}")
        self.epoch = epoch
        self.metrics = metrics


def sgd(
    net,
    data,
    epochs,
    batch_size,
    eta,
    momentum=0.0,
    schedule="constant",
    early_stopping=None,
    on_epoch=None,
    monitor=SPLITS,
):
    """Train ``net`` on ``data.train`` and return the list of each epoch's metrics.

    - ``momentum`` mu: velocities v <- mu v - eta grad C, then w <- w + v (chapter 3); 0 is plain SGD.
    - ``early_stopping`` n: the no-improvement-in-n rule on validation accuracy. With the
      ``constant`` schedule it stops training; with ``halve`` it halves eta (n defaults to 10 there),
      and training stops when eta reaches eta/128.
    - ``monitor``: the splits whose cost and accuracy each epoch reports.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r} (accepted: {', '.join(SCHEDULES)})")
    patience = early_stopping or (10 if schedule == "halve" else None)
    if patience and "validation" not in monitor:
        raise ValueError("early stopping and the halving schedule watch validation accuracy: monitor it")
    X, y = data.train.X, data.train.y
    n = X.shape[0]
    Y = one_hot(y, net.sizes[-1], net.dtype)
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    velocities = [np.zeros_like(p) for p in net.weights + net.biases] if momentum else None
    history, best, since_best, halvings = [], -1.0, 0, 0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is caught below, by the costs
            order = net.rng.permutation(n)
            for k in range(0, n, batch_size):
                batch = order[k : k + batch_size]
                update(net, X[batch], Y[batch], eta, n, momentum, velocities)
            metrics = {"epoch": epoch}
            for name in monitor:
                split = splits[name]
                metrics[f"{name}_cost"], metrics[f"{name}_accuracy"] = net.evaluate(split.X, split.y, n)
        metrics["epoch_seconds"] = time.perf_counter() - started
        metrics["eta"] = eta
        if not all(np.isfinite(v) for k, v in metrics.items() if k.endswith("_cost")):
            raise DivergenceError(epoch, metrics)
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
        if not patience:
            continue
        if metrics["validation_accuracy"] > best:
            best, since_best = metrics["validation_accuracy"], 0
            continue
        since_best += 1
        if since_best < patience:
            continue
        if schedule == "constant" or halvings + 1 == HALVINGS:
            break  # no improvement in n epochs: stop, or (halving) eta would now drop to eta/128
        eta, since_best, halvings = eta / 2, 0, halvings + 1
    return history


def update(net, X, Y, eta, n, momentum=0.0, velocities=None):
    """One step of gradient descent on the mini-batch (X, Y), written as the book writes the
    regularized rule: the regularizer's decay of the weights, then the step down the gradient of the
    unregularized cost (with momentum, if any). n is the size of the training set."""
    masks = net.dropout_masks(X.shape[0]) if net.regularizer.dropout else None
    grad_w, grad_b = net.backprop(X, Y, masks)
    for w in net.weights:
        net.regularizer.decay(w, eta, n)
    for i, (p, g) in enumerate(zip(net.weights + net.biases, grad_w + grad_b)):
        if velocities is None:
            p -= eta * g
        else:
            velocities[i] *= momentum
            velocities[i] -= eta * g
            p += velocities[i]
