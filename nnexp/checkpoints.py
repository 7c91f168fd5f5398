"""A run's checkpoint, kept with the run in MLflow, so that resuming needs nothing but the run id and
the store: a job requeued on another node, or a run taken up on another machine against a tracking
server, finds it there.

The checkpoint is the engine's (``nnexp.engine.checkpoint``: the network, its random generator and
the training state), written after every epoch as the run's artifact ``checkpoint/checkpoint.npz``.
MLflow writes an artifact to a temporary file and renames it into place, locally and on a tracking
server's artifact store alike, so a crash while writing leaves the previous checkpoint whole.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nnexp.engine import Network, checkpoint
from nnexp.engine.training import TrainingState

FOLDER, NAME = "checkpoint", "checkpoint.npz"


class CheckpointError(Exception):
    """A checkpoint that exists but cannot be read."""


class Checkpointer:
    """Saves one run's checkpoints, through a scratch file that lives as long as the run's process."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id
        self._scratch = tempfile.TemporaryDirectory(prefix="nnexp-checkpoint-")
        self._path = Path(self._scratch.name) / NAME

    def save(self, net: Network, state: TrainingState) -> None:
        self._path.write_bytes(checkpoint.to_bytes(net, state))  # scratch: MLflow's copy is the atomic one
        self.client.log_artifact(self.run_id, str(self._path), FOLDER)

    def close(self) -> None:
        self._scratch.cleanup()


def exists(client: MlflowClient, run_id: str) -> bool:
    return any(artifact.path == f"{FOLDER}/{NAME}" for artifact in client.list_artifacts(run_id, FOLDER))


def load(client: MlflowClient, run_id: str) -> tuple[Network, TrainingState]:
    """The network and training state of the run's last checkpoint."""
    with tempfile.TemporaryDirectory(prefix="nnexp-resume-") as tmp:
        try:
            path = client.download_artifacts(run_id, f"{FOLDER}/{NAME}", tmp)
            return checkpoint.load(path)
        except (MlflowException, OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise CheckpointError(f"cannot read the checkpoint of run {run_id}: {error}") from None
