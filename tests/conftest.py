"""Test-wide ground rules: real MNIST from ../shared unless NNEXP_DATA_DIR says otherwise (tests marked
``mnist`` are skipped, with the reason, when the files are not there), no traffic beyond 127.0.0.1, and
no MLflow telemetry."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from commands import run_in_process

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("NNEXP_DATA_DIR", str(REPO.parent / "shared" / "data" / "mnist"))
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MPLBACKEND"] = "Agg"


def mnist_missing() -> str | None:
    """Why the MNIST tests cannot run here, or None when the four files are in $NNEXP_DATA_DIR."""
    from nnexp.engine import data

    directory = Path(os.environ["NNEXP_DATA_DIR"])
    missing = [name for name in data.MNIST_FILES if not (directory / name).is_file()]
    if missing:
        return f"MNIST files not in NNEXP_DATA_DIR={directory} (missing {', '.join(missing)})"
    return None


def pytest_collection_modifyitems(config, items):
    reason = mnist_missing()
    if reason is not None:
        for item in items:
            if "mnist" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def no_real_mirrors(monkeypatch):
    """A test that falls through to downloading meets a closed local port, never the internet."""
    from nnexp.engine import data

    monkeypatch.setattr(data, "MIRRORS", ["http://127.0.0.1:9/"])


@pytest.fixture(scope="module")
def composer():
    """compose(*overrides) -> the config as ``python -m nnexp.run`` would compose it (with the ``hydra``
    node, as the launching process sees it)."""
    from hydra import compose, initialize_config_dir

    from nnexp import config
    from nnexp.run import CONF

    config.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides: compose(
            config_name="config", overrides=list(overrides), return_hydra_config=True
        )


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, its schema made once for the session: MLflow takes 2-4 s to make
    one, which every test's own store would otherwise pay."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store) -> str:
    """A new sqlite MLflow store in ``tmp_path`` (a copy of ``empty_store``), which is also the working
    directory.

    The URI is what the store rule gives for that directory, and it is exported as $MLFLOW_TRACKING_URI
    so that commands started in another directory log there too.
    """
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def nnexp_run(tmp_path):
    """Run ``python -m nnexp.run *args`` in ``tmp_path`` (so its outputs and store land there), or ``cwd``."""

    def run(
        *args: str, timeout: float = 120, cwd: Path | None = None, **kwargs
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nnexp.run", *args],
            cwd=cwd or tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    return run


@pytest.fixture
def nnexp_command(tmp_path, capfd):
    """``python -m nnexp.run *args`` in this process (``commands.run_in_process``), in ``tmp_path`` or
    ``cwd``, with ``env`` set for it: a ``subprocess.CompletedProcess`` of its status and output."""

    def command(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        capfd.readouterr()
        status = run_in_process(cwd or tmp_path, *args, env=env)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["nnexp.run", *args], status, out, err)

    return command


@pytest.fixture
def interruptible():
    """A ``preexec_fn`` for a child that a test interrupts with SIGINT: a shell starts background jobs
    with SIGINT ignored, and Python keeps an ignored SIGINT ignored, so a suite run in the background
    (as CI may) would otherwise send its Ctrl-C into the void."""
    return lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
