"""The book's own algorithm over an experiment's seeds: the spread chapter 1's rows are set against.

The book quotes one run of network.py, or the best of three, for settings whose runs differ widely from
draw to draw. To tell nnexp's spread from the algorithm's, this trains reference_network.py (the book's
network.py: float64, its sigmoid, chapter 1's N(0, 1) weights and biases) with an experiment's settings
and seeds, as ``python -m nnexp.run`` composes them from experiments/<name>.yaml, and writes each epoch's
test accuracy to experiments/results/ch1_reference/seeds.csv; ``python -m nnexp.book`` sets it beside
nnexp's seeds. A seed of the reference draws its own weights and mini-batches: the seed numbers are
nnexp's, the draws are not.

Each mini-batch takes chapter 2's matrix form of the step (``update_mini_batch_matrix``): the per-example
loop's arithmetic but for the order of the sums over the examples (tests/test_book.py checks the two
take the same steps), on one BLAS thread: 2 to 3 CPU seconds an epoch of [784,100,10] here, where the
loop takes 15 to 25. The CSV is committed and ``make reproduce`` only reads it; this script writes it anew. It
trains every seed of every experiment an epoch at a time, in turn, and appends each epoch as it ends:
stopped at any point, the file holds the same first epochs of every seed (a seed's numbers do not depend
on the others).

    python benchmarks/reference_spread.py ch1_quadratic_100 ch1_learning_rate ch1_learning_rate_large
    python benchmarks/reference_spread.py EXPERIMENT ... [--epochs N] [--out CSV]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from reference_network import ReferenceNetwork, as_column_pairs
from threadpoolctl import threadpool_limits

from nnexp import config
from nnexp.engine import data
from nnexp.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "experiments" / "results" / "ch1_reference" / "seeds.csv"
COLUMNS = ("experiment", "seed", "epoch", "test_accuracy", "epoch_cpu_seconds")
# What reference_network.py implements: chapter 1's network.py (plain SGD, constant eta) and nothing else.
BOOK_NETWORK = {"cost": "quadratic", "activation": "sigmoid", "regularization": "none"}
BOOK_TRAINING = {"momentum": 0.0, "schedule": "constant", "early_stopping": None}


def settings(experiment: str) -> tuple[config.Config, list[int]]:
    """The experiment's config and the seeds its sweep runs, composed as ``python -m nnexp.run`` does;
    one line and exit status 1 for an experiment that is not chapter 1's network.py."""
    config.register()
    with config.one_line_errors(), initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        composed = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
        c = config.validate(composed)
        differences = [
            f"{group}={getattr(c, group).name}"
            for group, name in BOOK_NETWORK.items()
            if getattr(c, group).name != name
        ]
        differences += [
            f"train.{key}={getattr(c.train, key)}"
            for key, value in BOOK_TRAINING.items()
            if getattr(c.train, key) != value
        ]
        if differences:
            raise ConfigError(
                f"experiment={experiment} has {', '.join(differences)}: reference_network.py is chapter 1's "
                "network.py (quadratic cost, sigmoid, no regularization, plain SGD)"
            )
        jobs = config.sweep_jobs(composed)
    seeds = [int(line.split("=", 1)[1]) for job in jobs for line in job if line.startswith("seed=")]
    return c, seeds or [c.seed]


class Run:
    """One seed of one experiment in the book's network.py, trained an epoch at a time.

    Each run shuffles its own copy of the training list, in place, with its own generator, as
    network.py's SGD does: runs trained in turn take the very steps they would take alone."""

    def __init__(self, experiment: str, c: config.Config, seed: int, epochs: int, training: list, test: list):
        self.experiment, self.seed, self.c, self.epochs = experiment, seed, c, epochs
        self.net = ReferenceNetwork([784, *c.model.hidden, 10], seed=seed, init=c.init.name)
        self.training, self.test = list(training), test

    def epoch(self) -> tuple[float, float]:
        """Train one epoch, then evaluate on the test data, as network.py does with ``test_data``:
        (test accuracy, CPU seconds: the core's time, whatever else shares the machine)."""
        started = time.process_time()
        with np.errstate(over="ignore"):  # the book's sigmoid overflows to its right value, 0
            self.net.sgd_epoch(self.training, self.c.train.batch_size, self.c.train.eta, matrix=True)
            accuracy = self.net.evaluate(self.test) / len(self.test)
        return accuracy, time.process_time() - started


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text}: accepted an integer >= 1")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", help="experiments/<name>.yaml to run")
    parser.add_argument("--epochs", type=positive, help="epochs to train (default: the experiments' own)")
    parser.add_argument("--out", type=Path, default=CSV, help=f"the CSV to write (default: {CSV})")
    args = parser.parse_args(argv)
    plans = {name: settings(name) for name in args.experiments}
    mnist = data.load("mnist", dtype="float64")
    training = as_column_pairs(mnist.train, one_hot_targets=True)
    test = as_column_pairs(mnist.test, one_hot_targets=False)
    runs = [
        Run(name, c, seed, args.epochs or c.train.epochs, training, test)
        for name, (c, seeds) in plans.items()
        for seed in seeds
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(limits=1), args.out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for epoch in range(1, max(run.epochs for run in runs) + 1):
            for run in (run for run in runs if epoch <= run.epochs):
                accuracy, seconds = run.epoch()
                writer.writerow((run.experiment, run.seed, epoch, f"{accuracy:.4f}", f"{seconds:.2f}"))
                f.flush()
                done = f"{run.experiment} seed {run.seed} epoch {epoch}"
                print(f"{done}: test {accuracy:.2%} ({seconds:.0f} CPU s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
