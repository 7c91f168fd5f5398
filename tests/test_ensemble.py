"""Chapter 6's ensemble: the networks of a real sweep (three architectures, on the digits) vote on the
test set, and the vote lands on the sweep's parent run."""

import numpy as np
import pytest
from commands import run_or_fail

from nnexp import ensemble, runs, store
from nnexp.engine import data
from nnexp.vocabulary import Status, Summary, Tag

pytestmark = pytest.mark.xdist_group(name="ensemble")  # the module's sweep runs once, on one worker


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """(client, parent run id) of a finished sweep of three networks of different sizes."""
    where = tmp_path_factory.mktemp("sweep")
    run_or_fail(where, "-m", "data=digits", "train.epochs=1", "model.hidden=[10],[20],[30,20]")
    client = store.connect(f"sqlite:///{where / 'mlflow.db'}")
    (parent,) = runs.find(client, [e.experiment_id for e in client.search_experiments()], {Tag.SWEEP: "true"})
    return client, parent.info.run_id, where


def test_plurality_takes_the_most_votes_and_a_tie_goes_to_the_smallest_digit():
    votes = np.array([[3, 1, 7, 2], [3, 4, 7, 9], [5, 4, 1, 0]])  # 3 voters, 4 images
    assert ensemble.plurality(votes, n_classes=10).tolist() == [3, 4, 7, 0]


def test_the_sweeps_networks_vote_and_the_parent_gets_the_vote(sweep, monkeypatch, capsys):
    client, parent_id, where = sweep
    monkeypatch.chdir(where)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ensemble.main(["--sweep", parent_id]) == 0

    result = ensemble.vote(client, parent_id)  # the vote again, checked against each network's digits
    assert len(result.voters) == 3
    test = data.load("digits").test
    assert result.votes.shape == (3, len(test.y))
    by_hand = [np.bincount(column, minlength=10).argmax() for column in result.votes.T]
    assert result.decided.tolist() == by_hand
    parent = client.get_run(parent_id)
    assert parent.data.metrics[Summary.ENSEMBLE_VOTERS] == 3
    assert parent.data.metrics[Summary.ENSEMBLE_TEST_ACCURACY] == pytest.approx(np.mean(by_hand == test.y))
    assert parent.data.metrics[Summary.ENSEMBLE_TEST_ERRORS] == np.sum(by_hand != test.y)
    assert ensemble.FIGURE in {artifact.path for artifact in client.list_artifacts(parent_id)}
    assert parent.info.status == Status.FINISHED
    out = capsys.readouterr().out
    assert out.startswith(f"ensemble of 3 networks of sweep {parent_id}: test accuracy ")


def test_a_run_that_is_not_a_sweep_or_unknown_is_one_line(sweep, monkeypatch, capsys):
    client, parent_id, where = sweep
    monkeypatch.chdir(where)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    child = runs.children(client, client.get_run(parent_id))[0].info.run_id
    for sweep_id, why in [(child, "has no FINISHED runs to vote"), ("nope", "unknown sweep id 'nope'")]:
        assert ensemble.main(["--sweep", sweep_id]) == 1
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("python -m nnexp.ensemble: error: ") and why in line
    assert Summary.ENSEMBLE_VOTERS not in client.get_run(child).data.metrics
