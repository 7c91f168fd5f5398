"""Compare runs from the MLflow store: learning-curve figures and a summary table.

    python -m nnexp.report                        # latest sweep of the most recently active experiment
    python -m nnexp.report --sweep <parent run id> --out reports/costs
    python -m nnexp.report --experiment nnexp --runs <id> <id>

Runs are labelled by what differs between them (the Hydra overrides that differ, e.g. ``cost=quadratic``),
so the same code serves a two-run comparison and a large sweep. ``write_report`` is also called by the
sweep callback, so every sweep's parent run carries the same figures and table as this command writes.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nnexp import errors, grammar, process, runs, store
from nnexp.engine import history as vocabulary
from nnexp.engine.history import EPOCH, final, initial_bias_gradients, learning_speed_keys, summarize
from nnexp.errors import NotFound
from nnexp.plots import plot_bias_gradients, plot_learning_speeds, plot_metric
from nnexp.vocabulary import Summary, Tag

UNSET = "(default)"  # shown for an override key that a run did not set


def select_runs(
    client: MlflowClient,
    experiment: str | None = None,
    sweep: str | None = None,
    selected: Sequence[str] = (),
) -> tuple[list[str], str]:
    """Resolve the command-line selection to (run ids, report name).

    ``selected`` are --runs. Without --runs or --sweep the latest sweep of the experiment is reported,
    or, if the experiment has no sweep, all its runs; ``sweep="latest"`` insists on a sweep.
    """
    if selected:
        for run_id in selected:
            runs.get(client, run_id)
        return list(selected), f"{_experiment_of(client, selected[0])} / selected runs"
    if sweep not in (None, "latest"):
        parent = runs.get(client, sweep, "sweep run")
        children = [run.info.run_id for run in runs.children(client, parent)]
        if not children:
            raise NotFound(f"run {sweep} is not a sweep: it has no child runs")
        return children, f"{_experiment_of(client, sweep)} / {parent.info.run_name or sweep}"
    exp = _experiment(client, experiment)
    candidates = runs.find(client, [exp.experiment_id], order_by=["attributes.start_time DESC"])
    if not candidates:
        raise NotFound(f"no runs in experiment {exp.name!r}")
    parents = [run for run in candidates if run.data.tags.get(Tag.SWEEP) == "true"]
    if parents:
        return select_runs(client, sweep=parents[0].info.run_id)
    if sweep == "latest":
        raise NotFound(f"no sweep in experiment {exp.name!r} (runs tagged {Tag.SWEEP}=true)")
    return [run.info.run_id for run in reversed(candidates)], exp.name


def _experiment_of(client: MlflowClient, run_id: str) -> str:
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


def _experiment(client: MlflowClient, name: str | None):
    """The named experiment, or by default the one whose latest run started most recently."""
    experiments = client.search_experiments()
    if name is not None:
        for exp in experiments:
            if exp.name == name:
                return exp
        available = ", ".join(sorted(exp.name for exp in experiments)) or "none"
        raise NotFound(f"unknown experiment {name!r} (available: {available})")
    latest = client.search_runs(
        [exp.experiment_id for exp in experiments], order_by=["attributes.start_time DESC"], max_results=1
    )
    if not latest:
        raise NotFound(f"no runs in the MLflow store at {client.tracking_uri}")
    return client.get_experiment(latest[0].info.experiment_id)


def run_history(client: MlflowClient, run_id: str) -> pd.DataFrame:
    """Per-epoch metrics of a run (step = epoch), one column per curve of ``history.CURVES``."""
    return pd.DataFrame(runs.stored_history(client, run_id), columns=[EPOCH, *vocabulary.CURVES])


def speed_history(client: MlflowClient, run: Run) -> pd.DataFrame:
    """A run's speeds of learning by epoch, from epoch 0 (``train.learning_speed``), one column per
    hidden layer: empty (no column but the epoch) for a run that did not measure them."""
    epochs: dict[int, dict[str, float]] = {}
    for curve in learning_speed_keys(run.data.metrics):
        for metric in client.get_metric_history(run.info.run_id, curve):
            epochs.setdefault(metric.step, {EPOCH: metric.step})[curve] = metric.value
    return pd.DataFrame(
        [epochs[epoch] for epoch in sorted(epochs)], columns=[EPOCH, *learning_speed_keys(run.data.metrics)]
    )


def run_labels(chosen: Sequence[Run]) -> tuple[list[dict[str, str]], list[str]]:
    """What distinguishes each run: the values of the differing override keys, or, when the overrides are
    all alike (e.g. hand-picked runs launched with the same command line), of the differing params.

    Returns one {key: value} dict per run (the table's key columns) and one legend label per run; labels of
    runs that do not differ at all are made unique with the run name."""
    settings = [_overrides(run) for run in chosen]
    if not _differing(settings):
        settings = [run.data.params for run in chosen]
    keys = _differing(settings)
    values = [{key: s.get(key, UNSET) for key in keys} for s in settings]
    labels = [
        " ".join(f"{k}={v}" for k, v in vals.items()) or run.info.run_name
        for vals, run in zip(values, chosen, strict=False)
    ]
    duplicated = {label for label in labels if labels.count(label) > 1}
    labels = [
        f"{label} ({run.info.run_name})" if label in duplicated else label
        for label, run in zip(labels, chosen, strict=False)
    ]
    return values, labels


def _overrides(run: Run) -> dict[str, str]:
    """``"cost=quadratic seed=1"`` -> {"cost": "quadratic", "seed": "1"}."""
    return dict(token.partition("=")[::2] for token in grammar.split(run.data.tags.get(Tag.OVERRIDES, "")))


def _differing(settings: Sequence[dict[str, str]]) -> list[str]:
    """Keys (in first-seen order) whose value is not the same in every run."""
    keys = dict.fromkeys(key for s in settings for key in s)
    return [key for key in keys if len({s.get(key) for s in settings}) > 1]


def table_row(run: Run, history: pd.DataFrame) -> dict:
    """One row of the summary table, in percent. Best and final values are the engine's summary of the
    epochs the store holds, so a failed run is summarized from the epochs it completed."""
    summary = summarize(history.to_dict("records"))
    end = run.info.end_time
    wall = run.data.metrics.get(Summary.WALL_SECONDS, (end - run.info.start_time) / 1000 if end else math.nan)
    percent = {
        "best validation %": vocabulary.BEST_VALIDATION_ACCURACY,
        "final validation %": final(vocabulary.key("validation", "accuracy")),
        "best test %": vocabulary.BEST_TEST_ACCURACY,
        "final test %": final(vocabulary.key("test", "accuracy")),
        "test % at best epoch": vocabulary.TEST_ACCURACY_AT_BEST_EPOCH,
    }
    return {
        "status": run.info.status.lower(),
        **{column: 100 * summary.get(name, math.nan) for column, name in percent.items()},
        "best epoch": int(summary[vocabulary.BEST_EPOCH]) if vocabulary.BEST_EPOCH in summary else pd.NA,
        "epochs": len(history),
        "wall s": wall,
    }


def write_report(client: MlflowClient, run_ids: Sequence[str], out_dir, title: str) -> list[Path]:
    """Write accuracy.png, cost.png, summary.csv and summary.md into out_dir (the two figures are the
    rows of one run's learning_curves.png, for many runs: one figure of both would repeat them), and
    chapter 5's figures for the runs that measured their speeds of learning (``chapter_5_figures``)."""
    if not run_ids:
        raise NotFound("no runs to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [client.get_run(run_id) for run_id in run_ids]
    histories = [run_history(client, run_id) for run_id in run_ids]
    values, labels = run_labels(chosen)
    by_label = dict(zip(labels, histories, strict=False))
    paths = [
        plot_metric(by_label, "accuracy", out / "accuracy.png", f"{title}: accuracy"),
        plot_metric(by_label, "cost", out / "cost.png", f"{title}: cost"),
    ]
    paths += chapter_5_figures(client, dict(zip(labels, chosen, strict=True)), out, title)

    rows = [
        {"run": run.info.run_name, "run_id": run.info.run_id, **vals, **table_row(run, history)}
        for run, vals, history in zip(chosen, values, histories, strict=False)
    ]
    failures = [run.data.tags.get(Tag.FAILURE_REASON, "") for run in chosen]
    table = pd.DataFrame(rows).astype({"best epoch": "Int64"})
    table = table.assign(**({"failure": failures} if any(failures) else {}))
    table = table.sort_values("best validation %", ascending=False, na_position="last", kind="stable")
    table.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(f"# {title}\n\n{to_markdown(table.drop(columns='run_id'))}\n")
    return paths + [out / "summary.csv", out / "summary.md"]


def chapter_5_figures(client: MlflowClient, by_label: dict[str, Run], out: Path, title: str) -> list[Path]:
    """learning_speed.png, one log-scale panel of speeds of learning per run that has them, titled by
    what differs, and bias_gradients.png, the bias gradients of each of those runs' networks before
    training (the chapter's bar figure); nothing for runs that did not measure them."""
    speeds = {label: speed_history(client, run) for label, run in by_label.items()}
    speeds = {label: history for label, history in speeds.items() if len(history)}
    gradients = {label: initial_bias_gradients(run.data.metrics) for label, run in by_label.items()}
    gradients = {label: layers for label, layers in gradients.items() if layers}
    paths = []
    if speeds:
        paths.append(plot_learning_speeds(speeds, out / "learning_speed.png", f"{title}: speed of learning"))
    if gradients:
        paths.append(
            plot_bias_gradients(gradients, out / "bias_gradients.png", f"{title}: dC/db before training")
        )
    return paths


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub markdown table, numbers right-aligned with 2 decimals (no tabulate dependency)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.2f}"
        return "" if value is None or value is pd.NA else str(value).replace("|", r"\|")

    numeric = [pd.api.types.is_numeric_dtype(dtype) for dtype in table.dtypes]
    lines = [
        "| " + " | ".join(map(str, table.columns)) + " |",
        "|" + "|".join("---:" if num else ":---" for num in numeric) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _slug(name: str) -> str:
    return re.sub(r"[^\w.=-]+", "_", name)


@errors.one_line("python -m nnexp.report", also=(MlflowException,))
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnexp.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment",
        help="experiment name (default: the most recently active one; not needed with a sweep id or --runs)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", help="sweep parent run id, or 'latest' (default: the latest sweep)")
    which.add_argument("--runs", nargs="+", default=(), metavar="ID", help="report these runs")
    parser.add_argument(
        "--out", type=Path, help="output directory (default: reports/<experiment>_<sweep name>)"
    )
    args = parser.parse_args(argv)
    client = store.connect(store.store_uri())
    run_ids, name = select_runs(client, args.experiment, args.sweep, args.runs)
    paths = write_report(client, run_ids, args.out or Path("reports") / _slug(name), name)
    print(f"report on {len(run_ids)} runs written to {paths[0].parent}")
    return 0


if __name__ == "__main__":
    process.prepare()
    sys.exit(main())
