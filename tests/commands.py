"""``python -m nnexp.run`` inside the test process: the same command line, Hydra, callbacks, MLflow store
and exit status as a new process, without the seconds a new process spends importing MLflow and Hydra.
For the tests that are about a command's result; those about processes (signals, kills, exit hooks,
launchers' workers) start real ones."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.singleton import Singleton
from joblib.externals.loky import get_reusable_executor

from nnexp import process, run


def run_in_process(where: Path, *args: str, env: Mapping[str, str | None] | None = None) -> int:
    """``python -m nnexp.run *args`` started in ``where`` with ``env`` (None: a variable unset), in this
    process; its exit status. What it prints goes to this process's stdout and stderr.

    Hydra's global state is put back after the command, joblib's workers stopped (they keep the
    directory and environment they started with; the next command must start its own, as a new
    process would), and the process's cached dataset dropped before it (NNEXP_DATA_DIR may differ)."""
    process.dataset.cache_clear()
    state = Singleton.get_state()
    GlobalHydra.instance().clear()  # a test's own compose() context, put back after the command
    with pytest.MonkeyPatch.context() as this_command:
        this_command.chdir(where)
        this_command.setattr(sys, "argv", ["nnexp.run"])
        for key, value in (env or {}).items():
            if value is None:
                this_command.delenv(key, raising=False)
            else:
                this_command.setenv(key, value)
        try:
            run.command(list(args))
        except SystemExit as stop:
            if isinstance(stop.code, str):  # what the interpreter prints for sys.exit("...")
                print(stop.code, file=sys.stderr)
                return 1
            return stop.code or 0
        finally:
            Singleton.set_state(state)
            get_reusable_executor().shutdown(wait=True)
    return 0


def run_or_fail(where: Path, *args: str) -> None:
    """``run_in_process`` for a module's fixture (which cannot use ``nnexp_command``), its store
    ./mlflow.db in ``where``: fails the test unless the command exits 0."""
    status = run_in_process(where, *args, env={"MLFLOW_TRACKING_URI": None})
    if status != 0:
        pytest.fail(f"python -m nnexp.run {' '.join(args)} exited: {status}")
