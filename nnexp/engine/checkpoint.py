"""Checkpoints: a network and its training state in one ``.npz`` file, to train on from exactly there.

    checkpoint.save("run.ckpt.npz", net, state)        # after any epoch (sgd's on_epoch)
    net, state = checkpoint.load("run.ckpt.npz")
    sgd(net, data, epochs=60, ..., state=state)        # the same epochs as if it had never stopped

The file holds what ``Network.save`` writes (weights, biases, components, the random generator's
state) and the ``TrainingState`` beside it (epoch, eta, the stopping rule's counters, momentum's
velocities, the history). It is written to a temporary file then renamed over the old one, so a
crash while writing leaves the previous checkpoint whole.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from nnexp.engine.files import write_atomically
from nnexp.engine.network import Network
from nnexp.engine.training import StoppingRule, TrainingState


def to_bytes(net: Network, state: TrainingState) -> bytes:
    """The checkpoint file's content: an uncompressed ``.npz`` (writing it takes about a millisecond)."""
    arrays = net.arrays()
    arrays["state"] = np.array(
        json.dumps(
            {
                "epoch": state.epoch,
                "eta": state.eta,
                "rule": dataclasses.asdict(state.rule) if state.rule is not None else None,
                "history": state.history,
                "stopped": state.stopped,
                "momentum": state.velocities is not None,
            }
        )
    )
    for i, v in enumerate(state.velocities or ()):
        arrays[f"v{i}"] = v
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def save(path: str | Path, net: Network, state: TrainingState) -> None:
    """Write the checkpoint to ``path`` atomically: the old file stays whole until the new one is."""
    write_atomically(Path(path), to_bytes(net, state))


def load(path: str | Path) -> tuple[Network, TrainingState]:
    """The network and training state saved at ``path``."""
    with np.load(path) as f:
        net = Network.from_arrays(f)
        saved = json.loads(str(f["state"]))
        velocities = None
        if saved["momentum"]:
            velocities = [f[f"v{i}"] for i in range(2 * (len(net.sizes) - 1))]
    rule = StoppingRule(**saved["rule"]) if saved["rule"] is not None else None
    state = TrainingState(saved["epoch"], saved["eta"], rule, velocities, saved["history"], saved["stopped"])
    return net, state
