"""Runs found by their tags across MLflow's pages: a sweep or study of more than 1,000 runs is seen whole
by the report, a resume and a search (a real sqlite store, runs made cheaply through the client)."""

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from nnexp import report, resume, runs
from nnexp.handoff import SweepHandoff
from nnexp.search import TrialBook
from nnexp.vocabulary import Status, Tag

CHILDREN = 1_001  # one more than a page of MLflow's search_runs
pytestmark = pytest.mark.xdist_group(name="big_sweep")  # one worker makes the 1,001 runs, once


@pytest.fixture(scope="module")
def big_sweep(tmp_path_factory):
    """(client, a sweep's parent run, the handoff its jobs read) with CHILDREN finished child runs."""
    folder = tmp_path_factory.mktemp("big")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("big", artifact_location=(folder / "artifacts").as_uri())
    parent = client.create_run(experiment_id, tags={Tag.SWEEP: "true"})
    parent_id = parent.info.run_id
    for job in range(CHILDREN):
        job_tags = {Tag.PARENT: parent_id, Tag.SWEEP_ID: parent_id, Tag.JOB: str(job), Tag.TRIAL: str(job)}
        child = client.create_run(experiment_id, tags=job_tags)
        client.set_terminated(child.info.run_id, Status.FINISHED)
    return client, client.get_run(parent_id), SweepHandoff(uri, experiment_id, parent_id)


def test_find_follows_every_page(big_sweep):
    client, parent, _ = big_sweep
    children = runs.children(client, parent)
    assert len(children) == CHILDREN
    assert [run.data.tags[Tag.JOB] for run in children] == [str(job) for job in range(CHILDREN)]


def test_the_report_sees_every_run_of_the_sweep(big_sweep):
    client, parent, _ = big_sweep
    run_ids, _ = report.select_runs(client, sweep=parent.info.run_id)
    assert len(set(run_ids)) == CHILDREN


def test_a_resumed_sweep_finds_its_last_job(big_sweep):
    client, _, handoff = big_sweep
    taken_up = resume.find(OmegaConf.create({}), handoff, CHILDREN - 1)
    assert taken_up is not None and taken_up.skip  # FINISHED: left alone, not started again
    assert taken_up.run.data.tags[Tag.JOB] == str(CHILDREN - 1)


def test_the_search_sees_every_trial(big_sweep):
    client, parent, _ = big_sweep
    book = TrialBook(client, parent.info.run_id)
    assert sorted(book.runs_by_trial()) == list(range(CHILDREN))
    assert book.run_of(CHILDREN - 1).data.tags[Tag.TRIAL] == str(CHILDREN - 1)
