"""The shape of the project: the engine stands alone, and the README's examples run."""

import ast
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


# The harness in layers, from the engine up: a module imports only from its own layer or those below,
# never in a circle (counting imports inside functions and under TYPE_CHECKING). The README's layout
# section lists the same modules in the same layers.
LAYERS = {
    "engine": ["nnexp.engine"],
    "words": ["nnexp.vocabulary", "nnexp.errors", "nnexp.adapters", "nnexp.tether", "nnexp.process"],
    "config": ["nnexp.grammar", "nnexp.config"],
    "store": ["nnexp.store", "nnexp.runs", "nnexp.handoff"],
    "one run": ["nnexp.plots", "nnexp.lineage", "nnexp.checkpoints", "nnexp.tracking"],
    "features": [
        "nnexp.resume",
        "nnexp.study",
        "nnexp.search",
        "nnexp.outcome",
        "nnexp.report",
        "nnexp.ensemble",
    ],
    "callbacks": ["nnexp.callbacks"],
    "entry points": [
        "nnexp.run",
        "nnexp.book",
        "nnexp.server",
        "nnexp.pyfunc_model",
        "nnexp",
        "hydra_plugins.nnexp_search",
    ],
}
# Deferred on purpose, to keep a heavy library out of the processes that do not need it: the search
# (Optuna), the compiled training loop and the conv layer's compiled loops (numba). No other import of
# nnexp's own may sit in a function.
DEFERRED = {"nnexp.search", "nnexp.engine.fast", "nnexp.engine.conv_kernels"}


def _modules() -> dict[str, Path]:
    """Every module of nnexp and of its Hydra door, by dotted name."""
    files = [*(REPO / "nnexp").rglob("*.py"), *(REPO / "hydra_plugins" / "nnexp_search").rglob("*.py")]
    named = {}
    for path in files:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        named[".".join(parts)] = path
    return named


def _layer(module: str) -> int:
    """The index in LAYERS of the most specific prefix that places ``module``."""
    placed = [
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS.values())
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert placed, f"{module} is in no layer of tests/test_layout.py's LAYERS"
    return max(placed)[1]


def _imports(path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported nnexp module, line, inside a function) for every import in ``path``."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [f"{child.module}.{alias.name}" for alias in child.names] + [child.module]
            for name in names:
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name:
                    found.append((name, child.lineno, in_function))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


def test_imports_run_down_the_layers_never_in_a_circle():
    modules = _modules()
    edges: dict[str, set[str]] = {module: set() for module in modules}
    wrong = []
    for module, path in modules.items():
        for imported, line, in_function in _imports(path, set(modules)):
            if imported == module or module.startswith(imported + "."):
                continue  # a package's own __init__, on the way to its module
            edges[module].add(imported)
            where = f"{path.relative_to(REPO)}:{line} imports {imported}"
            if _layer(imported) > _layer(module):
                wrong.append(f"{where}, a layer above")
            if in_function and imported not in DEFERRED:
                wrong.append(f"{where} inside a function")
    assert not wrong, "\n".join(wrong)
    circles = [circle for module in modules if (circle := _circle(edges, [module]))]
    assert not circles, " -> ".join(circles[0])


def _circle(edges: dict[str, set[str]], path: list[str]) -> list[str] | None:
    """A circle of imports from ``path[0]`` through ``path``, if there is one."""
    for imported in sorted(edges[path[-1]]):
        if imported == path[0]:
            return [*path, imported]
        if imported not in path and (found := _circle(edges, [*path, imported])):
            return found
    return None


def test_every_function_local_import_says_what_it_defers():
    """An import inside a function is there to keep a heavy library out of processes that do not need
    it; a comment names which, on its line or on a line of the block of imports it belongs to (or just
    above that block)."""
    silent = []
    for path in _modules().values():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for child in ast.walk(node):
                if isinstance(child, ast.Import | ast.ImportFrom) and not _commented(lines, child.lineno - 1):
                    silent.append(f"{path.relative_to(REPO)}:{child.lineno}")
    assert not silent, f"function-local imports without a comment saying why: {', '.join(silent)}"


def _commented(lines: list[str], index: int) -> bool:
    """Whether the import on ``lines[index]``, or one in the block of imports it ends, has a comment."""
    while index >= 0 and lines[index].strip().startswith(("import ", "from ", "#")):
        if "#" in lines[index]:
            return True
        index -= 1
    return False


def test_the_readme_layout_lists_every_module():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    missing = [
        path.name
        for path in (REPO / "nnexp").glob("*.py")
        if path.name != "__init__.py" and path.name not in layout
    ]
    assert not missing, f"README's layout section does not name {', '.join(missing)}"
