"""The shape of the project: the engine stands alone, and the README's examples run."""

import doctest
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HARNESS_LIBRARIES = ("hydra", "omegaconf", "mlflow", "pandas", "matplotlib", "sklearn")


def test_the_engine_loads_no_harness_library():
    """In a fresh interpreter: importing the engine's public API loads nothing of the harness."""
    code = (
        "import sys; from nnexp.engine import Network, load, sgd; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} | "
        "{m for m in sys.modules if m.startswith('nnexp.')})))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(loaded.stdout.split())
    assert "nnexp.engine.network" in modules  # the probe sees what it should
    assert not modules & set(HARNESS_LIBRARIES)
    assert {m for m in modules if m.startswith("nnexp.")} <= {
        m for m in modules if m.startswith("nnexp.engine")
    }


def test_readme_examples_run():
    """The README's ``>>>`` examples (chapter 1's perceptron and sigmoid neuron) print what it says."""
    failures, tried = doctest.testfile(str(REPO / "README.md"), module_relative=False)
    assert tried > 0 and failures == 0
