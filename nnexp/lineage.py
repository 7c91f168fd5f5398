"""A run's lineage, as MLflow's runs table shows it beside params and metrics: the Source, Dataset and
Models columns.

MLflow reads them from its standard source tags, from the run's inputs (``log_inputs``), and from
MLflow 3 logged models linked to the run. nnexp fills all three for every run, so a run found in the
UI says which code made it, on which data, and gives back a network that predicts digits:

    mlflow.pyfunc.load_model(f"models:/{model_id}").predict(images)   # or runs:/<run id>/model
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelOutput
from mlflow.tracking import MlflowClient

from nnexp import config
from nnexp.engine import Network, data
from nnexp.engine.data import Dataset as Data
from nnexp.engine.history import SPLITS
from nnexp.vocabulary import Tag

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
MODEL = "model"  # the logged model's name: runs:/<run id>/model finds it too


def source_tags() -> dict[str, str]:
    """MLflow's source tags (the entry point and the commit of the code that ran), and whether the
    work tree had uncommitted changes; no git tags outside a git checkout."""
    found = {Tag.SOURCE_NAME: "nnexp/run.py", Tag.SOURCE_TYPE: "LOCAL"}
    try:
        head = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return found
    return {**found, Tag.GIT_COMMIT: head, Tag.GIT_DIRTY: str(dirty).lower()}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def dataset_input(c: config.DataConfig, dataset: Data) -> DatasetInput:
    """The run's data as MLflow's Dataset column shows it: its name and the split that made it, a digest
    of its content (the canonical files' md5s, or the digits' bytes, and the split), where it came
    from, and the sizes of its splits."""
    if c.name == "mnist":
        content, source = [md5 for md5, _, _ in data.MNIST_FILES.values()], str(data.find_mnist())
    else:
        content = [
            hashlib.md5(part.pixels.tobytes() + part.y.tobytes()).hexdigest() for part in _splits(dataset)
        ]
        source = "sklearn.datasets.load_digits"
    split = {"train_size": c.train_size, "expand": c.expand}
    digest = hashlib.md5(json.dumps([content, split]).encode()).hexdigest()[:12]
    name = c.name + "".join(f" {key}={value}" for key, value in split.items() if value)
    profile = {split: len(part.y) for split, part in zip(SPLITS, _splits(dataset), strict=True)}
    schema = {"X": [None, dataset.n_inputs], "y": [None], "pixels": "[0, 1]", "classes": dataset.n_classes}
    return DatasetInput(
        Dataset(name, digest, "local", json.dumps({"uri": source}), json.dumps(schema), json.dumps(profile)),
        tags=[InputTag("mlflow.data.context", "training")],
    )


def _splits(dataset: Data) -> list:
    return [getattr(dataset, split) for split in SPLITS]


def log_model(
    client: MlflowClient, experiment_id: str, run_id: str, net: Network, weights: Path, step: int
) -> str:
    """The trained network (its weights file ``weights``) as an MLflow 3 logged model of the run (its
    Models column) after ``step`` epochs, loadable with ``mlflow.pyfunc.load_model(f"models:/{model_id}")``;
    returns the model id."""
    model = client.create_logged_model(experiment_id, name=MODEL, source_run_id=run_id, model_type="nnexp")
    with tempfile.TemporaryDirectory() as tmp:
        write_model(Path(tmp), net, weights)
        client.log_model_artifacts(model.model_id, tmp)
    client.finalize_logged_model(model.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
    return model.model_id


def write_model(folder: Path, net: Network, weights: Path) -> None:
    """An MLflow pyfunc model in ``folder``, written as MLflow's custom flavors are: its MLmodel file,
    the weights, the code that loads them (``nnexp/pyfunc_model.py`` and the engine, nothing of the
    harness) and the environment it needs. (``mlflow.pyfunc.save_model`` would also copy the whole
    package and scan every installed distribution to check the requirements: most of a second.)

    Its signature takes rows of ``sizes[0]`` pixels as doubles: MLflow then accepts float32 and
    float64 arrays and DataFrames (and uint8), where a tensor signature would refuse every dtype but
    one.
    """
    from mlflow.models import Model, ModelSignature  # only the end of a run needs MLflow's models
    from mlflow.pyfunc import add_to_model
    from mlflow.types.schema import ColSpec, Schema

    code = folder / "code" / "nnexp"
    shutil.copytree(PACKAGE / "engine", code / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    for module in ("__init__.py", "pyfunc_model.py"):
        shutil.copy(PACKAGE / module, code / module)
    shutil.copy(weights, folder / "network.npz")
    requirements = [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    python = ".".join(map(str, sys.version_info[:3]))
    (folder / "python_env.yaml").write_text(
        f"python: {python}\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n"
    )
    signature = ModelSignature(
        inputs=Schema([ColSpec("double") for _ in range(net.sizes[0])]), outputs=Schema([ColSpec("long")])
    )
    model = Model(signature=signature)
    add_to_model(
        model,
        loader_module="nnexp.pyfunc_model",
        data="network.npz",
        code="code",
        python_env="python_env.yaml",
    )
    model.save(str(folder / "MLmodel"))


# What the model's code imports, and MLflow to load it: pinned to the versions that trained it.
REQUIREMENTS = ("mlflow", "numpy", "scipy", "platformdirs")
