"""The vocabulary of a training history: the metric keys of an epoch and the summary of a run.

Training reports one ``Metrics`` dict per epoch; everything that logs, plots, tabulates or optimises
those numbers (the harness, the report, a search) reads them by the keys defined here and summarizes
a history with ``summarize``, so that "best validation accuracy" means the same thing everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

SPLITS = ("train", "validation", "test")
MEASURES = ("cost", "accuracy")
EPOCH, EPOCH_SECONDS, ETA = "epoch", "epoch_seconds", "eta"

Metrics = dict[str, float]  # one epoch: EPOCH, key(split, measure) for the monitored splits, seconds, eta

# Epoch 0 is the network before any training. Only measurements of the network itself are reported
# for it (the speeds of learning of chapter 5 and the bias gradients of its bar figure): it has no
# cost, accuracy, seconds or eta, and it is no training epoch, so summaries leave it out.
INITIAL = 0


def key(split: str, measure: str) -> str:
    """The metric key of a split's cost or accuracy: ``key("validation", "accuracy")``."""
    return f"{split}_{measure}"


CURVES = tuple(key(split, measure) for split in SPLITS for measure in MEASURES)

# Chapter 5's speed of learning of hidden layer l (1 = the first): the norm of dC/db^l. The curves are
# as many as a network has hidden layers, so they are found by name (``learning_speed_keys``).
_LEARNING_SPEED = re.compile(r"learning_speed_([1-9][0-9]*)")
_BIAS_GRADIENT = re.compile(r"bias_gradient_([1-9][0-9]*)_([1-9][0-9]*)")
NEURONS_SHOWN = 6  # the chapter's bar figure shows dC/db of the first six neurons of each hidden layer


def learning_speed(layer: int) -> str:
    """The metric key of hidden layer ``layer``'s speed of learning (1 = the first hidden layer)."""
    return f"learning_speed_{layer}"


def learning_speed_keys(keys: Iterable[str]) -> list[str]:
    """The speed-of-learning keys among ``keys``, from the first hidden layer to the last."""
    found = {int(m[1]): m[0] for m in map(_LEARNING_SPEED.fullmatch, keys) if m}
    return [found[layer] for layer in sorted(found)]


def bias_gradient(layer: int, neuron: int) -> str:
    """The metric key of dC/db of ``neuron`` (1 = the first) of hidden layer ``layer``, reported at
    epoch 0 only: the values of the chapter's bar figure."""
    return f"bias_gradient_{layer}_{neuron}"


def initial_bias_gradients(metrics: Mapping[str, float]) -> list[list[float]]:
    """The bias gradients an epoch-0 report holds, one list per hidden layer, neuron by neuron."""
    found = {(int(m[1]), int(m[2])): metrics[m[0]] for m in map(_BIAS_GRADIENT.fullmatch, metrics) if m}
    layers = sorted({layer for layer, _ in found})
    return [[found[layer, n] for n in sorted(n for lay, n in found if lay == layer)] for layer in layers]


def training_epochs(history: Sequence[Mapping[str, float]]) -> list[Mapping[str, float]]:
    """The epochs of a history that trained: all but epoch 0 (``INITIAL``), if reported."""
    return [metrics for metrics in history if metrics[EPOCH] != INITIAL]


# The summary of a run. The book reports the *peak* accuracy over a run's epochs, so "best" is a peak;
# the objective a search maximises is the best validation accuracy (test data never steers a choice).


def best(curve: str) -> str:
    """The summary key of an accuracy curve's peak over the epochs: ``best("test_accuracy")``."""
    return f"best_{curve}"


def final(curve: str) -> str:
    """The summary key of a curve's value at the last epoch: ``final("test_accuracy")``."""
    return f"final_{curve}"


BEST_VALIDATION_ACCURACY = best(key("validation", "accuracy"))
BEST_TEST_ACCURACY = best(key("test", "accuracy"))
BEST_EPOCH = "best_epoch"  # the epoch of the best validation accuracy (the last, on ties, as network3)
# Chapter 6's figure: the test accuracy at BEST_EPOCH, the network validation would have chosen
TEST_ACCURACY_AT_BEST_EPOCH = f"{key('test', 'accuracy')}_at_{BEST_EPOCH}"
EPOCHS_RUN = "epochs_run"
OBJECTIVE = BEST_VALIDATION_ACCURACY


def summarize(history: Sequence[Mapping[str, float]]) -> Metrics:
    """The end-of-run metrics of a history: the peak of each accuracy curve, the epoch of the best
    validation accuracy and the test accuracy at that epoch, and the last epoch's value of every curve.

    Curves missing from the history (splits not monitored) and NaN values (the epoch a run diverged)
    are left out rather than poisoning the peaks; epoch 0, which trained nothing, is not counted.
    """
    history = training_epochs(history)
    summary: Metrics = {EPOCHS_RUN: float(len(history))}
    for curve in CURVES:
        values = _curve(history, curve)
        if not values:
            continue
        summary[final(curve)] = values[-1][1]
        if curve.endswith("_accuracy"):
            summary[best(curve)] = max(value for _, value in values)
    validation = _curve(history, key("validation", "accuracy"))
    if validation:
        best_epoch = max(reversed(validation), key=lambda epoch_value: epoch_value[1])[0]  # the last
        summary[BEST_EPOCH] = float(best_epoch)
        test = dict(_curve(history, key("test", "accuracy")))
        if best_epoch in test:
            summary[TEST_ACCURACY_AT_BEST_EPOCH] = test[best_epoch]
    return summary


def _curve(history: Sequence[Mapping[str, float]], curve: str) -> list[tuple[float, float]]:
    """(epoch, value) of every epoch that has a value of ``curve`` that is not NaN."""
    return [
        (m[EPOCH], float(m[curve]))
        for m in history
        if curve in m and m[curve] is not None and not math.isnan(m[curve])
    ]
