"""The adapters to other libraries' private code (nnexp/adapters), against the pinned versions: each does
what the library itself does, so an upgrade that changes it fails here first."""

import inspect
import os

import optuna
from hydra_plugins.hydra_joblib_launcher import _core
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from joblib import Parallel, delayed
from omegaconf import OmegaConf

from nnexp.adapters import joblib_launcher, optuna_trial


def test_a_trial_reopened_by_number_in_another_study_object_reports_to_the_same_trial(tmp_path):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal"))
    )
    driver = optuna.create_study(study_name="s", storage=storage)
    driver.ask()
    asked = driver.ask()  # the second trial: the number is not just the first id
    job = optuna.load_study(study_name="s", storage=storage)  # as a job in another process opens it
    reopened = optuna_trial.trial_of(job, asked.number)
    reopened.report(0.75, step=3)
    reopened.set_user_attr("seen", True)
    (trial,) = [t for t in driver.get_trials() if t.number == asked.number]
    assert trial.intermediate_values == {3: 0.75} and trial.user_attrs == {"seen": True}


def test_the_parallel_settings_are_the_launchers_own(composer):
    launcher = composer(
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.launcher.pre_dispatch=4"
    ).hydra.launcher
    settings = joblib_launcher.parallel_settings(launcher)

    arguments = OmegaConf.to_container(launcher, resolve=True)
    del arguments["_target_"]
    plugin = JoblibLauncher(**arguments)  # what the launcher's _core.launch then gives joblib.Parallel:
    expected = {**plugin.joblib, "backend": "loky"}
    _core.process_joblib_cfg(expected)
    assert settings == expected and settings["pre_dispatch"] == 4  # a string made an integer
    assert joblib_launcher.is_joblib(launcher)
    assert Parallel(**settings)(delayed(os.getpid)() for _ in range(2))  # joblib takes them


def test_n_jobs_minus_one_is_a_worker_per_core():
    assert joblib_launcher.worker_count({"n_jobs": -1}) == os.cpu_count()
    assert joblib_launcher.worker_count({"n_jobs": 3}) == 3


def test_mlflow_starts_its_server_through_the_name_the_server_adapter_replaces():
    """``nnexp.adapters.mlflow_server`` replaces ``mlflow.server._exec_cmd``; that MLflow's server start
    calls it is what makes ``make server`` become its web server (tests/test_server.py then checks the
    memory and the processes of the real thing)."""
    import mlflow.server

    assert callable(mlflow.server._exec_cmd)
    assert "_exec_cmd(" in inspect.getsource(mlflow.server._run_server)
