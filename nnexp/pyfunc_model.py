"""A trained network as an MLflow pyfunc model: images in, digits out.

    model = mlflow.pyfunc.load_model(f"models:/{model_id}")   # or f"runs:/{run_id}/model"
    digits = model.predict(images)   # images: (n, 784) array or DataFrame with pixels in [0, 1]

This module is the model's loader (its ``loader_module``, in MLflow's terms): the model holds the
weights (the ``Network.save`` file) and, as its code, this module with the engine, so loading needs
neither a checkout of this repository nor any pickled object, and imports nothing of the harness.
"""

from __future__ import annotations

import numpy as np

from nnexp.engine.network import Network


class NnexpModel:
    def __init__(self, net: Network):
        self.net = net

    def predict(self, model_input, params=None) -> np.ndarray:
        """Digits for the rows of ``model_input``: an array, or a DataFrame (what MLflow's serving sends)."""
        images = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
        return self.net.predict(images.astype(self.net.dtype, copy=False))


def _load_pyfunc(path: str) -> NnexpModel:
    """MLflow's entry point: the model of the weights at ``path``."""
    return NnexpModel(Network.load(path))
