"""The book's ensemble (chapter 6): the networks of a sweep vote on every test digit.

    python -m nnexp.ensemble --sweep <parent run id>

Each FINISHED child of the sweep gives its final network (the run's ``network.npz``), and a test image
is classified as the digit most of them choose: a plurality vote, a tie going to the smallest digit
(``numpy.argmax`` keeps the first maximum). The sweep's parent run gets the metrics
``ensemble_test_accuracy`` and ``ensemble_voters`` and the figure ``ensemble_errors.png`` of every test
digit the vote gets wrong, with its label and the vote: the book's figure of the 33 digits its five
networks miss. Networks of different architectures may vote together; they only have to read the same
images, so the children must have been trained on one dataset.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nnexp import errors, plots, process, runs, store
from nnexp.engine import Network, data
from nnexp.errors import ConfigError, NotFound
from nnexp.vocabulary import Status, Summary

FIGURE = "ensemble_errors.png"
SHOWN = 198  # wrong digits drawn at most (18 rows of 11): a poor vote's thousand would be a poster


def plurality(votes: np.ndarray, n_classes: int) -> np.ndarray:
    """The digit most voters chose for each image: ``votes`` (voters, n) -> (n,); ties to the smallest."""
    counts = np.zeros((votes.shape[1], n_classes), dtype=np.int64)  # (n, classes)
    images = np.arange(votes.shape[1])
    for vote in votes:  # (n,): one network's digits
        np.add.at(counts, (images, vote), 1)
    return counts.argmax(axis=1)


@dataclass(frozen=True)
class Vote:
    """A sweep's vote on the test set: the voting runs, each one's digits, and what the vote decided."""

    voters: list[str]  # the run ids of the networks that voted
    test: data.Split
    votes: np.ndarray  # (voters, n): each network's digit for each test image
    decided: np.ndarray  # (n,): the plurality of the votes

    @property
    def wrong(self) -> np.ndarray:
        """The indices of the test images the vote gets wrong."""
        return np.flatnonzero(self.decided != self.test.y)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.decided == self.test.y))


def vote(client: MlflowClient, sweep_id: str) -> Vote:
    """The vote of the final networks of the FINISHED children of the sweep ``sweep_id``."""
    parent = runs.get(client, sweep_id, "sweep")
    finished = [run for run in runs.children(client, parent) if run.info.status == Status.FINISHED]
    if not finished:
        raise NotFound(f"sweep {sweep_id} has no FINISHED runs to vote (its children are the voters)")
    datasets = sorted({run.data.params.get("data.name", "mnist") for run in finished})
    if len(datasets) != 1:
        raise ConfigError(
            f"the runs of sweep {sweep_id} were trained on {', '.join(datasets)}: one dataset votes"
        )
    test = data.load(datasets[0]).test
    nets = [_network(client, run.info.run_id) for run in finished]
    votes = np.stack([net.predict(test.inputs().astype(net.dtype, copy=False)) for net in nets])
    return Vote([run.info.run_id for run in finished], test, votes, plurality(votes, n_classes=10))


def _network(client: MlflowClient, run_id: str) -> Network:
    """The final network of a run, as it logged it (``network.npz``)."""
    with tempfile.TemporaryDirectory(prefix="nnexp-ensemble-") as tmp:
        try:
            return Network.load(client.download_artifacts(run_id, "network.npz", tmp))
        except (MlflowException, OSError) as error:
            raise NotFound(f"run {run_id} has no readable network.npz: {errors.line(error)}") from None


def log(client: MlflowClient, sweep_id: str, result: Vote) -> None:
    """The vote's metrics and its figure of wrong digits, on the sweep's parent run; the figure is drawn
    before anything is logged, so a failure leaves the run as it was."""
    wrong = result.wrong
    shown = wrong[:SHOWN]
    title = f"{len(wrong)} test digits the vote of {len(result.voters)} networks gets wrong (label -> vote)"
    if len(shown) < len(wrong):
        title += f", the first {len(shown)}"
    with tempfile.TemporaryDirectory(prefix="nnexp-ensemble-") as tmp:
        figure = plots.plot_misclassified(
            result.test.pixels[shown], result.test.y[shown], result.decided[shown], Path(tmp) / FIGURE, title
        )
        client.log_metric(sweep_id, Summary.ENSEMBLE_TEST_ACCURACY, result.accuracy)
        client.log_metric(sweep_id, Summary.ENSEMBLE_VOTERS, len(result.voters))
        client.log_metric(sweep_id, Summary.ENSEMBLE_TEST_ERRORS, len(wrong))
        client.log_artifact(sweep_id, str(figure))


@errors.one_line("python -m nnexp.ensemble", also=(MlflowException,))
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnexp.ensemble", description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", required=True, help="the sweep's parent run id (its runs vote)")
    args = parser.parse_args(argv)
    client = store.connect(store.store_uri())
    result = vote(client, args.sweep)
    log(client, args.sweep, result)
    experiment_id = client.get_run(args.sweep).info.experiment_id
    print(
        f"ensemble of {len(result.voters)} networks of sweep {args.sweep}: test accuracy "
        f"{result.accuracy:.2%} ({len(result.wrong)} wrong, in {FIGURE}): {store.runs_url(experiment_id)}"
    )
    return 0


if __name__ == "__main__":
    process.prepare()
    sys.exit(main())
