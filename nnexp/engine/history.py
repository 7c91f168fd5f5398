"""The vocabulary of a training history: the metric keys of an epoch and the summary of a run.

Training reports one ``Metrics`` dict per epoch; everything that logs, plots, tabulates or optimises
those numbers (the harness, the report, a search) reads them by the keys defined here and summarizes
a history with ``summarize``, so that "best validation accuracy" means the same thing everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

SPLITS = ("train", "validation", "test")
MEASURES = ("cost", "accuracy")
EPOCH, EPOCH_SECONDS, ETA = "epoch", "epoch_seconds", "eta"

Metrics = dict[str, float]  # one epoch: EPOCH, key(split, measure) for the monitored splits, seconds, eta


def key(split: str, measure: str) -> str:
    """The metric key of a split's cost or accuracy: ``key("validation", "accuracy")``."""
    return f"{split}_{measure}"


CURVES = tuple(key(split, measure) for split in SPLITS for measure in MEASURES)

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
BEST_EPOCH = "best_epoch"  # the epoch of the best validation accuracy (the first, on ties)
EPOCHS_RUN = "epochs_run"
OBJECTIVE = BEST_VALIDATION_ACCURACY


def summarize(history: Sequence[Mapping[str, float]]) -> Metrics:
    """The end-of-run metrics of a history: the peak of each accuracy curve, the epoch of the best
    validation accuracy, and the last epoch's value of every curve.

    Curves missing from the history (splits not monitored) and NaN values (the epoch a run diverged)
    are left out rather than poisoning the peaks.
    """
    summary: Metrics = {EPOCHS_RUN: float(len(history))}
    for curve in CURVES:
        values = _curve(history, curve)
        if not values:
            continue
        summary[final(curve)] = values[-1][1]
        if curve.endswith("_accuracy"):
            epoch, peak = max(values, key=lambda epoch_value: epoch_value[1])  # max keeps the first
            summary[best(curve)] = peak
            if curve == key("validation", "accuracy"):
                summary[BEST_EPOCH] = float(epoch)
    return summary


def _curve(history: Sequence[Mapping[str, float]], curve: str) -> list[tuple[float, float]]:
    """(epoch, value) of every epoch that has a value of ``curve`` that is not NaN."""
    return [
        (m[EPOCH], float(m[curve]))
        for m in history
        if curve in m and m[curve] is not None and not math.isnan(m[curve])
    ]
