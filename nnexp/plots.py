"""Learning-curve figures in the style of the book: one panel per data split, one line per run.

Figures are built with the object API (``matplotlib.figure.Figure``), never pyplot's global state, so
they can be drawn from threads and joblib workers (the sweep callback) without interfering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nnexp.engine.history import EPOCH, SPLITS, key

TITLES = {"train": "Training", "validation": "Validation", "test": "Test"}  # panel titles of history.SPLITS
METRICS = {"accuracy": "Accuracy (%)", "cost": "Cost"}  # axis labels of history.MEASURES
MARKER_MAX_EPOCHS = 15  # short runs get point markers so a 3-epoch curve is not mistaken for a straight line


def plot_metric(histories: Mapping[str, pd.DataFrame], metric: str, path, title: str) -> Path:
    """One row of panels (training / validation / test) of ``metric`` ("accuracy" or "cost")."""
    return _save(histories, [metric], path, title)


def plot_learning_curves(histories: Mapping[str, pd.DataFrame], path, title: str) -> Path:
    """Accuracy (top row) and cost (bottom row) for training / validation / test in one figure."""
    return _save(histories, list(METRICS), path, title)


def _save(histories: Mapping[str, pd.DataFrame], metrics: Sequence[str], path, title: str) -> Path:
    """Draw one row per metric with a shared legend below the panels, so the legend never covers a curve."""
    if not histories:
        raise ValueError("no histories to plot")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r} (accepted: {', '.join(METRICS)})")
    colors = _colors(len(histories))
    legend = len(histories) > 1
    # Constrained layout makes room for a legend of any length, at half the figure's drawing time; a
    # single run's figure has none, and fixed margins fit it.
    fig = Figure(
        figsize=(12, 3.4 * len(metrics) + 0.4 * _legend_rows(len(histories))),
        layout="constrained" if legend else None,
    )
    if not legend:
        fig.subplots_adjust(
            left=0.06,
            right=0.99,
            bottom=0.17 / len(metrics),
            top=1 - 0.2 / len(metrics),
            wspace=0.25,
            hspace=0.3,
        )
    axes = fig.subplots(len(metrics), len(SPLITS), squeeze=False, sharex=True)
    for row, metric in zip(axes, metrics, strict=False):
        _draw_row(row, histories, metric, colors)
    for ax in axes[-1]:
        ax.set_xlabel("Epoch")
    fig.suptitle(title, fontsize="large")
    if legend:
        fig.legend(
            handles=axes[0][0].get_lines(),
            loc="outside lower center",
            ncols=min(len(histories), 3),
            frameon=False,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def _draw_row(axes, histories: Mapping[str, pd.DataFrame], metric: str, colors) -> None:
    """Plot ``<split>_<metric>`` of every run on its split's panel; non-finite points (diverged runs) are
    left out rather than breaking the axis scale."""
    scale = 100.0 if metric == "accuracy" else 1.0
    for ax, split in zip(axes, SPLITS, strict=True):
        for (label, history), color in zip(histories.items(), colors, strict=False):
            epochs = history[EPOCH].to_numpy(dtype=float)
            values = history[key(split, metric)].to_numpy(dtype=float) * scale
            finite = np.isfinite(values)
            ax.plot(
                epochs[finite],
                values[finite],
                label=label,
                color=color,
                linewidth=1.5,
                marker="o" if len(epochs) <= MARKER_MAX_EPOCHS else None,
                markersize=3.5,
            )
        ax.set_title(f"{TITLES[split]} {metric}")
        ax.set_ylabel(METRICS[metric])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)


def _colors(n: int) -> list:
    """Distinct colours for n runs, the same run having the same colour on every panel."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def _legend_rows(n: int) -> int:
    return 0 if n <= 1 else -(-n // 3)


def plot_trials(
    curves: Mapping[int, tuple[str, Mapping[int, float]]], best: int | None, path, title: str
) -> Path:
    """A search's trials, as their jobs reported them to the pruner: validation accuracy per epoch, one
    line per trial. Pruned trials are grey and end in a cross where they were stopped; the best
    complete trial is drawn thick."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for number, (state, values) in sorted(curves.items()):
        if not values:
            continue
        epochs, accuracies = zip(*sorted(values.items()), strict=True)
        percent = 100 * np.asarray(accuracies)
        if state == "PRUNED":
            ax.plot(epochs, percent, color="0.6", linewidth=1)
            ax.plot(epochs[-1], percent[-1], marker="x", color="0.4", markersize=6)
        else:
            thick = number == best
            ax.plot(
                epochs,
                percent,
                linewidth=2.5 if thick else 1.2,
                label=f"trial {number} (best)" if thick else None,
            )
    ax.set(xlabel="Epoch", ylabel="Validation accuracy (%)", title=f"{title}: trials (grey x: pruned)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if best is not None:
        ax.legend(loc="lower right", frameon=False)
    path = Path(path)
    fig.savefig(path, dpi=150)
    return path
