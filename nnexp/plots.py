"""Learning-curve figures in the style of the book: one panel per data split, one line per run; and
chapter 5's speeds of learning (a log-scale panel, one line per hidden layer) and its bar figure of the
hidden layers' bias gradients at initialization; chapter 6's grid of the test digits an ensemble gets
wrong.

Figures are built with the object API (``matplotlib.figure.Figure``), never pyplot's global state, so
they can be drawn from threads and joblib workers (the sweep callback) without interfering.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nnexp.engine.history import EPOCH, SPLITS, key, learning_speed_keys

TITLES = {"train": "Training", "validation": "Validation", "test": "Test"}  # panel titles of history.SPLITS
METRICS = {"accuracy": "Accuracy (%)", "cost": "Cost"}  # axis labels of history.MEASURES
MARKER_MAX_EPOCHS = 15  # short runs get point markers so a 3-epoch curve is not mistaken for a straight line


def plot_metric(histories: Mapping[str, pd.DataFrame], metric: str, path, title: str) -> Path:
    """One row of panels (training / validation / test) of ``metric`` ("accuracy" or "cost")."""
    return _save(histories, [metric], path, title)


def plot_learning_curves(histories: Mapping[str, pd.DataFrame], path, title: str) -> Path:
    """Accuracy (top row) and cost (bottom row) for training / validation / test in one figure, and
    below them, when the histories hold them, the speeds of learning of the hidden layers."""
    return _save(histories, list(METRICS), path, title, speeds=True)


def _save(
    histories: Mapping[str, pd.DataFrame], metrics: Sequence[str], path, title: str, speeds: bool = False
) -> Path:
    """Draw one row per metric with a shared legend below the panels, so the legend never covers a curve;
    with ``speeds``, a last row of one wide panel of the speeds of learning, if any history has them."""
    if not histories:
        raise ValueError("no histories to plot")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r} (accepted: {', '.join(METRICS)})")
    speeds = speeds and any(learning_speed_keys(history.columns) for history in histories.values())
    rows = len(metrics) + speeds
    colors = _colors(len(histories))
    legend = len(histories) > 1
    # Constrained layout makes room for a legend of any length, at half the figure's drawing time; a
    # single run's figure has none, and fixed margins fit it.
    fig = Figure(
        figsize=(12, 3.4 * rows + 0.4 * _legend_rows(len(histories))),
        layout="constrained" if legend else None,
    )
    if not legend:
        fig.subplots_adjust(
            left=0.06, right=0.99, bottom=0.17 / rows, top=1 - 0.2 / rows, wspace=0.25, hspace=0.3
        )
    grid = fig.add_gridspec(rows, len(SPLITS))
    axes = grid[: len(metrics), :].subgridspec(len(metrics), len(SPLITS)).subplots(squeeze=False, sharex=True)
    for row, metric in zip(axes, metrics, strict=False):
        _draw_row(row, histories, metric, colors)
    for ax in axes[-1]:
        ax.set_xlabel("Epoch")
    if speeds:
        draw_learning_speeds(fig.add_subplot(grid[-1, :]), histories)
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


LINESTYLES = ("-", "--", ":", "-.")  # one per run on a panel of speeds, the colour being the layer's


def draw_learning_speeds(ax, histories: Mapping[str, pd.DataFrame], title: str = "Speed of learning") -> None:
    """Chapter 5's figure on ``ax``: the speed of learning of each hidden layer by epoch, from epoch 0
    (the network before training), on a log scale; non-positive or non-finite values are left out."""
    several = len(histories) > 1
    for (label, history), style in zip(histories.items(), itertools.cycle(LINESTYLES), strict=False):
        for layer, column in enumerate(learning_speed_keys(history.columns), 1):
            values = history[column].to_numpy(dtype=float)
            shown = np.isfinite(values) & (values > 0)
            ax.plot(
                history[EPOCH].to_numpy(dtype=float)[shown],
                values[shown],
                color=f"C{layer - 1}",
                linestyle=style,
                linewidth=1.5,
                label=f"{label}: hidden layer {layer}" if several else f"Hidden layer {layer}",
            )
    ax.set_yscale("log")
    ax.set(title=title, xlabel="Epoch", ylabel="Speed of learning ||dC/db||")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="best", frameon=False, fontsize="small")


def plot_learning_speeds(histories: Mapping[str, pd.DataFrame], path, title: str) -> Path:
    """One panel of speeds of learning per run (the book draws one figure per depth), each titled by
    the run's label; runs without speeds are left out."""
    shown = {label: h for label, h in histories.items() if learning_speed_keys(h.columns)}
    if not shown:
        raise ValueError("no history holds speeds of learning")
    columns = min(len(shown), 3)
    rows = -(-len(shown) // columns)
    fig = Figure(figsize=(max(5.5 * columns, 7), 4.2 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (label, history) in zip(axes, shown.items(), strict=False):
        draw_learning_speeds(ax, {label: history}, title=label)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize="large")
    return _write(fig, path)


def plot_bias_gradients(gradients: Mapping[str, Sequence[Sequence[float]]], path, title: str) -> Path:
    """Chapter 5's bar figure: dC/db of the first neurons of each hidden layer of a network before
    training, one panel per run and one group of bars per hidden layer. The bars of the first hidden
    layer are visibly shorter: it learns more slowly."""
    columns = min(len(gradients), 3)
    rows = -(-len(gradients) // columns)
    fig = Figure(figsize=(6.5 * columns, 3.2 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(gradients) :]:
        ax.set_visible(False)
    for ax, (label, layers) in zip(axes, gradients.items(), strict=False):
        ticks, names = [], []
        for layer, values in enumerate(layers, 1):
            x = np.arange(len(values)) + (len(values) + 1) * (layer - 1)
            ax.bar(x, values, color=f"C{layer - 1}", label=f"Hidden layer {layer}")
            ticks += list(x)
            names += [str(j) for j in range(1, len(values) + 1)]
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xticks(ticks, names, fontsize="small")
        ax.set(xlabel="Neuron of each hidden layer", ylabel="dC/db")
        ax.set_title(label, pad=20)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(
            loc="lower center", bbox_to_anchor=(0.5, 0.99), ncols=len(layers), frameon=False, fontsize="small"
        )
    fig.suptitle(title, fontsize="large")
    return _write(fig, path)


def plot_misclassified(
    pixels: np.ndarray, labels: np.ndarray, votes: np.ndarray, path, title: str, columns: int = 11
) -> Path:
    """The images ``pixels`` (k, side*side) in a grid, each captioned "label -> vote", as the book shows
    the test digits its ensemble gets wrong (dark ink on white, as on paper). The grid is one mosaic
    image with a caption under each digit: a panel per digit would take matplotlib seconds."""
    k = len(pixels)
    side = int(round(np.sqrt(pixels.shape[1]))) if k else 1
    rows, cell = max(1, -(-k // columns)), side + 2 * (side // 7 + 1)  # a digit and its margin
    mosaic = np.zeros((rows * cell, columns * cell), dtype=float)  # (rows*cell, columns*cell), 0 is white
    for i, image in enumerate(pixels):
        top, left = (i // columns) * cell, (i % columns) * cell
        mosaic[top : top + side, left : left + side] = image.reshape(side, side)
    fig = Figure(figsize=(columns * 0.9, rows * 1.0 + 0.5), layout="constrained")
    ax = fig.subplots()
    ax.imshow(mosaic, cmap="gray_r", interpolation="nearest")
    for i, (label, vote) in enumerate(zip(labels, votes, strict=True)):
        x, y = (i % columns) * cell + side / 2, (i // columns) * cell + side
        ax.text(x, y, f"{label} -> {vote}", ha="center", va="top", fontsize="small")
    ax.set_axis_off()
    ax.set_title(title, fontsize="medium")
    return _write(fig, path)


def _write(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


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
