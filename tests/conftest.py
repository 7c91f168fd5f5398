"""Test-wide ground rules: real MNIST from ../shared unless NNEXP_DATA_DIR says otherwise, no traffic
beyond 127.0.0.1, and no MLflow telemetry."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("NNEXP_DATA_DIR", str(REPO.parent / "shared" / "data" / "mnist"))
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MPLBACKEND"] = "Agg"


@pytest.fixture(autouse=True)
def no_real_mirrors(monkeypatch):
    """A test that falls through to downloading meets a closed local port, never the internet."""
    from nnexp import data

    monkeypatch.setattr(data, "MIRRORS", ["http://127.0.0.1:9/"])
