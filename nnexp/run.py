"""The one entry point: train a network as configured in conf/, tracked in MLflow.

    python -m nnexp.run                                       # chapter 3's default net, 30 epochs
    python -m nnexp.run experiment=smoke cost=quadratic       # override any key of conf/
    python -m nnexp.run -m cost=quadratic,crossentropy        # a sweep: a parent run, one child per job
    python -m nnexp.run -m hydra/launcher=joblib hydra.launcher.n_jobs=2 seed=0,1,2,3   # jobs side by side

The store is ./mlflow.db (or $MLFLOW_TRACKING_URI); each run ends by printing the UI page of its runs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from nnexp import config, store, tags, tracking
from nnexp.engine import DataError, Network, load, sgd
from nnexp.engine.history import EPOCH, EPOCH_SECONDS, SPLITS, Metrics, key
from nnexp.sweep import SweepHandoff

CONF = Path(__file__).resolve().parent.parent / "conf"  # absolute: found however this module is started

config.register()


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> tracking.RunResult:
    """Train one network (one job, in a sweep) and track it as one MLflow run.

    Returns the run's result: its ``objective`` (best validation accuracy) is what a sweeper
    optimises, and its history holds every epoch's metrics.
    """
    c = config.validate(cfg)
    job = HydraConfig.get()
    try:
        dataset = load(c.data.name, train_size=c.data.train_size, expand=c.data.expand, dtype=c.dtype)
    except DataError as error:  # missing or corrupt files: one line, and no run created
        raise config.ConfigError(str(error)) from None
    net = Network(
        [dataset.n_inputs, *c.model.hidden, dataset.n_classes],
        activation=c.activation.name,
        cost=c.cost.name,
        init=c.init.name,
        regularizer=c.regularization.name,
        lmbda=c.regularization.lmbda,
        p=c.regularization.p,
        seed=c.seed,
        dtype=c.dtype,
    )
    run = start_run(cfg, c, job)
    output_dir = Path(job.runtime.output_dir)
    side_by_side = job.mode == RunMode.MULTIRUN and job.launcher.get("n_jobs") not in (None, 1)
    if side_by_side:
        # One BLAS thread per job, so that two jobs on two cores do not each start two threads and fight
        # over them. Left set for the worker's life: it only runs this sweep's jobs. (Set and restored
        # around each job instead, the second wave of jobs ran twice as slow.)
        threadpool_limits(limits=1)
    with tracking.ending(run):
        with progress(run.name, c.train.epochs, live=sys.stdout.isatty() and not side_by_side) as show:
            sgd(
                net,
                dataset,
                c.train.epochs,
                c.train.batch_size,
                c.train.eta,
                momentum=c.train.momentum,
                schedule=c.train.schedule,
                early_stopping=c.train.early_stopping,
                on_epoch=lambda metrics: (run.log_epoch(metrics), show(metrics)),
            )
        run.log_summary()
        run.log_outputs(net, output_dir, OmegaConf.to_yaml(cfg, resolve=True), output_dir / job.output_subdir)
    if run.failure is not None:
        print(f"{run.name}: FAILED, {run.failure}", file=sys.stderr)
    print(f"{run.name}: {store.runs_url(run.experiment_id)}")
    return run.result()


def start_run(cfg: DictConfig, c: config.Config, job: DictConfig) -> tracking.TrackedRun:
    """Create this job's run: nested under the sweep's parent when a sweep launched it, else on its own
    in the store of the directory the command was started in."""
    sweep = SweepHandoff.load(Path(job.sweep.dir)) if job.mode == RunMode.MULTIRUN else None
    if sweep is not None:
        client, experiment_id = MlflowClient(sweep.tracking_uri), sweep.experiment_id
    else:
        client, experiment_id = store.open_experiment(store.store_uri(job.runtime.cwd), c.tracking.experiment)
    overrides = list(job.overrides.task)
    run_tags = {
        tags.OVERRIDES: " ".join(overrides),
        tags.SWEEP_ID: sweep.parent_run_id if sweep else "",
        tags.JOB: str(job.job.get("num", 0)),
        tags.SEED: str(c.seed),
        tags.GIT_COMMIT: tracking.git_commit(),
    }
    if sweep is not None:
        run_tags[tags.PARENT] = sweep.parent_run_id
    params = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
    return tracking.TrackedRun.create(client, experiment_id, run_name(overrides, c.seed), run_tags, params)


def run_name(overrides: list[str], seed: int) -> str:
    """The overrides that make this run what it is, always with its seed: "cost=quadratic seed=0"."""
    named = overrides if any(o.startswith("seed=") for o in overrides) else [*overrides, f"seed={seed}"]
    return " ".join(named) if overrides else f"default seed={seed}"


@contextlib.contextmanager
def progress(name: str, epochs: int, live: bool) -> Iterator[Callable[[Metrics], None]]:
    """A display of each epoch's accuracies: a tqdm bar (on a terminal, one job at a time), else one
    plain line per epoch (log files, CI and parallel jobs read better without carriage returns)."""
    if not live:
        yield lambda metrics: print(
            f"{name} | epoch {metrics[EPOCH]}/{epochs} {accuracies(metrics)}", flush=True
        )
        return
    with tqdm(total=epochs, desc=name, unit="epoch", file=sys.stdout) as bar:

        def show(metrics: Metrics) -> None:
            bar.set_postfix_str(accuracies(metrics), refresh=False)
            bar.update()

        yield show


def accuracies(metrics: Metrics) -> str:
    """ "train 95.10% validation 94.80% test 94.70% (0.3s)": one epoch's line of the progress display."""
    shown = [
        f"{split} {metrics[key(split, 'accuracy')]:.2%}"
        for split in SPLITS
        if key(split, "accuracy") in metrics
    ]
    return " ".join(shown) + f" ({metrics[EPOCH_SECONDS]:.1f}s)"


if __name__ == "__main__":
    with config.one_line_errors():
        main()
