"""A trained network as an MLflow pyfunc model: images in, digits out.

    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    digits = model.predict(images)   # images: (n, 784) array or DataFrame with pixels in [0, 1]

This file is logged as MLflow "model from code": MLflow copies it into the model and runs it on load
(the ``set_model`` at the end), so no pickled object is involved. The weights travel as the model's
"network" artifact (the ``Network.save`` file) and the nnexp package as its code, so loading needs no
checkout of this repository.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from nnexp.engine.network import Network


class NnexpModel(PythonModel):
    def load_context(self, context) -> None:
        self.net = Network.load(context.artifacts["network"])

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        """Digits for the rows of ``model_input``. The hint is np.ndarray, one of the types MLflow passes
        through untouched; a DataFrame (what MLflow's serving sends) works too."""
        images = model_input.to_numpy() if isinstance(model_input, pd.DataFrame) else np.asarray(model_input)
        return self.net.predict(images.astype(self.net.dtype, copy=False))


set_model(NnexpModel())
