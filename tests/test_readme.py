"""The README as a new user meets it: every command of its code blocks runs as written and gives the
figure its comment names ("validation 96.5%": the run's best validation accuracy, to within
``TOLERANCE``).

The commands are read from the README itself, and ``EXAMPLES`` says how each is tried: as written,
shortened (a command that trains for minutes, with the overrides that shorten it, and why), or not
here (and what does try it). A command the README gains, loses or changes without ``EXAMPLES``
following fails ``test_every_command_of_the_readme_is_tried_here``. The ``console`` blocks (bad input,
how a command ends, a resume) are compared line by line with what the commands print, ids and
timings aside; the ``pycon`` block is tests/test_layout.py's doctest.

The fast part (``make test``) is the README's shape, the first commands (``make install``, ``source
.venv/bin/activate``, what ``make run`` and ``make sweep`` run) and the console blocks, on the digits.
The commands that train on MNIST, as written, take minutes: marked slow (``make test-full``).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from commands import run_in_process
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from nnexp import ensemble, report

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TOLERANCE = 0.3  # percentage points: BLAS sums in another order on another machine, and epochs amplify it

# --- The README, read --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, its lines (unindented) and the heading it is under."""

    language: str
    lines: tuple[str, ...]
    section: str


@dataclass(frozen=True)
class Command:
    """One command of a ``bash`` block (a line, with its continuations), and its comment."""

    text: str
    comment: str
    section: str


def blocks(text: str) -> list[Block]:
    found, section, fence = [], "", None
    for line in text.splitlines():
        opening = re.fullmatch(r"(\s*)```(\w*)\s*", line)
        if fence is None and opening:
            fence, indent, lines = opening.group(2), len(opening.group(1)), []
        elif fence is not None and line.strip() == "```":
            found.append(Block(fence, tuple(lines), section))
            fence = None
        elif fence is not None:
            lines.append(line[indent:])
        elif heading := re.fullmatch(r"#{1,6} (.*)", line):
            section = heading.group(1)
    return found


def split_comment(line: str) -> tuple[str, str]:
    """(the command, its comment): the comment starts at a ``#`` outside quotes, after a space."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip(), line[i + 1 :].strip()
    return line.strip(), ""


def bash_commands(readme: str) -> list[Command]:
    commands = []
    for block in blocks(readme):
        if block.language != "bash":
            continue
        pending = ""
        for line in block.lines:
            text, comment = split_comment(line)
            if text.endswith("\\"):
                pending += text[:-1].strip() + " "
                continue
            if pending or text:
                commands.append(Command(" ".join((pending + text).split()), comment, block.section))
            pending = ""
    return commands


def console_steps(block: Block) -> list[tuple[str, list[str]]]:
    """(a command after ``$ ``, the lines it prints) of a ``console`` block."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.lines:
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


FIGURE = re.compile(r"\b(train|validation|test) (\d+(?:\.\d+)?%(?:(?:,| and) \d+(?:\.\d+)?%)*)")


def figures(comment: str) -> list[tuple[str, list[float]]]:
    """ "train 100.0%, validation 88.6%" -> [("train", [100.0]), ("validation", [88.6])]; a sweep's
    runs in job order: "validation 93.7% and 96.5%"."""
    return [
        (split, [float(value) for value in re.findall(r"\d+(?:\.\d+)?", values)])
        for split, values in FIGURE.findall(comment)
    ]


# --- How each command is tried -------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """How this test tries one README command: ``run`` as written, checking its figures; ``short``, with
    ``extra`` overrides that shorten it (``why``); ``first``, one of the first commands, checked by
    ``test_the_first_commands_put_nnexp_on_the_path``; ``skip``, not here (``why``: what tries it).
    ``id``: the story's id that the command's ``<...>`` placeholder stands for."""

    kind: str
    extra: tuple[str, ...] = ()
    why: str = ""
    id: str = ""


RUN, FIRST = Example("run"), Example("first")


def short(*extra: str, why: str) -> Example:
    return Example("short", extra, why)


def skip(why: str) -> Example:
    return Example("skip", why=why)


SERVERS = skip("servers: tests/test_server.py")
LONG = "minutes on MNIST as written"
EXAMPLES = {
    "make install": FIRST,
    "source .venv/bin/activate": FIRST,
    "make run": FIRST,  # its command runs below, as `python -m nnexp.run`
    "make sweep": FIRST,
    "make ui": SERVERS,
    "make server": SERVERS,
    "make test": skip("the test suite itself"),
    "export NNEXP_DATA_DIR=$(pwd)/../shared/data/mnist": FIRST,
    "python -m nnexp.run": RUN,
    "python -m nnexp.run cost=quadratic init=large train.eta=3.0 regularization=none": RUN,
    "python -m nnexp.run model.hidden=[100,30] activation=tanh regularization=dropout "
    "regularization.p=0.3": RUN,
    "python -m nnexp.run data.train_size=1000 train.epochs=400 regularization=none": RUN,
    "python -m nnexp.run experiment=ch3_l2_100": RUN,
    "python -m nnexp.run -m cost=quadratic,crossentropy": RUN,
    "python -m nnexp.run -m hydra/launcher=joblib hydra.launcher.n_jobs=-1 seed=1,2,3,4": RUN,
    "python -m nnexp.run resume=<run id>": Example("run", id="interrupted run"),
    "python -m nnexp.run resume=<run id> train.epochs=60": Example("run", id="interrupted run"),
    "python -m nnexp.run resume=<sweep run id>": Example("run", id="interrupted sweep"),
    "python -m nnexp.run -m search=ch3_eta_lmbda": short(
        "data.train_size=5000", "train.epochs=3", "hydra.sweeper.n_trials=3", why=f"20 trials: {LONG}"
    ),
    "python -m nnexp.run -m search=ch3_broad_strategy": short(
        "data.train_size=5000", "train.epochs=3", "hydra.sweeper.n_trials=3", why=f"30 trials: {LONG}"
    ),
    "python -m nnexp.run -m search=ch3_eta_lmbda 'activation=choice(sigmoid,tanh)' 'train.eta=tag(log, "
    "interval(0.05, 5))' hydra.sweeper.n_trials=40": short(
        "data.train_size=5000", "train.epochs=3", "hydra.sweeper.n_trials=3", why=f"40 trials: {LONG}"
    ),
    "python -m nnexp.run -m search=ch3_eta_lmbda hydra/launcher=joblib hydra.launcher.n_jobs=-1 "
    "hydra.sweeper.n_jobs=2": short(
        "data.train_size=5000", "train.epochs=3", "hydra.sweeper.n_trials=4", why=f"20 trials: {LONG}"
    ),
    "python -m nnexp.report": RUN,
    "python -m nnexp.report --experiment ch3_l2_100": RUN,
    "python -m nnexp.report --sweep <sweep run id>": Example("run", id="last sweep"),
    "python -m nnexp.report --out figures/": RUN,
    "python -m nnexp.run model.hidden=[30,30,30,30] train.learning_speed=true": RUN,
    "python -m nnexp.run -m experiment=ch5_learning_speed": short(
        "train.epochs=20", why=f"500 epochs: {LONG}"
    ),
    "python -m nnexp.run -m experiment=ch5_initial_speed": short("seed=0,1", why="ten seeds: a minute"),
    "python -m nnexp.run -m experiment=ch5_depth": short(
        "train.epochs=2", "seed=1", why=f"five seeds: {LONG}"
    ),
    "python -m nnexp.report --experiment ch5_learning_speed": RUN,
    "python -m nnexp.run experiment=ch6_conv2_relu train.epochs=1": RUN,
    "python -m nnexp.run -m experiment=ch6_conv2_relu": short(
        "data.train_size=1000", "train.epochs=1", "seed=1,2", why="three seeds of 60 epochs: hours"
    ),
    "python -m nnexp.run -m experiment=ch6_conv1 'model.conv=[{filters:20,kernel:5,pool:2}],"
    "[{filters:40,kernel:5,pool:2}]'": short(
        "data.train_size=1000", "train.epochs=1", "seed=1", why="60 epochs a network: an hour"
    ),
    "python -m nnexp.ensemble --sweep <sweep run id>": Example("run", id="last sweep"),
    "make reproduce-ch6": skip("hours: tests/test_experiments.py trains each of its experiments an epoch"),
    "python -m nnexp.run -m experiment=ch6_dropout hydra/launcher=submitit_slurm "
    "hydra.launcher.partition=cpu hydra.launcher.timeout_min=360": skip(
        "SLURM: tests/test_server.py sweeps with submitit_local"
    ),
}
# Sections whose commands this test leaves to others, and why: every command in them is theirs.
ELSEWHERE = {
    "A team: a tracking server, a cluster": "servers, PostgreSQL and SLURM: tests/test_server.py",
    "Results: the book, reproduced": "hours of training: make reproduce (tests/test_reproduce.py, slow)",
    "Testing and benchmarks": "the test suite and the benchmarks themselves",
}
# Python blocks, by their first line.
PYTHON = {
    "from nnexp.engine import Network, load, sgd": RUN,  # its history's figure, checked
    "from nnexp.engine import ConvPool, FullyConnected, Network, Softmax": skip(
        "chapter 6's conv net: 60 epochs of hours on numpy"
    ),
    "import os": Example("run", id="last run"),  # a logged model, loaded without progress bars
}


def readme() -> str:
    return README.read_text()


def tried_here(command: Command) -> bool:
    return command.section not in ELSEWHERE


# --- Fast: the README's shape, its first commands, its console blocks -------------------------------------


def test_every_command_of_the_readme_is_tried_here():
    """Every command outside ``ELSEWHERE`` is in ``EXAMPLES`` (and the other way round), every python
    block in ``PYTHON``, and each section named ``ELSEWHERE`` is still in the README."""
    text = readme()
    commands = [command.text for command in bash_commands(text) if tried_here(command)]
    assert sorted(set(commands)) == sorted(EXAMPLES), "the README's commands and EXAMPLES differ"
    python = [block.lines[0] for block in blocks(text) if block.language == "python"]
    assert sorted(python) == sorted(PYTHON), "the README's python blocks and PYTHON differ"
    headings = set(re.findall(r"^#{1,6} (.*)$", text, re.MULTILINE))
    assert set(ELSEWHERE) <= headings
    for example in EXAMPLES.values():
        assert (example.kind in ("short", "skip")) == bool(example.why)


def make(*args: str) -> subprocess.CompletedProcess:
    """``make *args`` in the repository; its own output only (under ``make test`` it is a make within a
    make, which would otherwise add "make[1]: Entering directory" lines)."""
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_the_first_commands_put_nnexp_on_the_path():
    """``make install`` has made ``.venv`` (``make test`` starts with it), which holds nnexp and its
    libraries once activated; ``make run`` and ``make sweep`` run the README's commands of the same
    figures; the data directory the README exports holds MNIST (on this project's machines)."""
    assert make("-n", "install").returncode == 0 and (REPO / ".venv" / ".installed").is_file()
    activated = subprocess.run(
        ["bash", "-c", "source .venv/bin/activate && python -c 'import hydra, nnexp; print(1)'"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert activated.stdout == "1\n", activated.stderr
    python = ".venv/bin/python -m nnexp.run"
    assert make("-n", "run").stdout.splitlines()[-1].strip() == python
    parallel = "-m hydra/launcher=joblib hydra.launcher.n_jobs=-1 cost=quadratic,crossentropy"
    assert make("-n", "sweep").stdout.splitlines()[-1].split() == [*python.split(), *parallel.split()]
    said = {command.text: command.comment for command in bash_commands(readme())}
    assert figures(said["make run"]) == figures(said["python -m nnexp.run"])
    assert figures(said["make sweep"]) == figures(said["python -m nnexp.run -m cost=quadratic,crossentropy"])
    data = REPO.parent / "shared" / "data" / "mnist"
    if data.is_dir():  # this project's machines
        assert {"train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"} <= {p.name for p in data.iterdir()}


ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Transcript:
    """Compares what commands print with the README's console blocks: run ids stand for the ids of
    this test's runs (bound as they first appear), timings and the new store's directory aside."""

    where: Path
    ids: dict[str, str] = field(default_factory=dict)  # README id -> this test's

    def command(self, written: str) -> list[str]:
        for readme_id, ours in self.ids.items():
            written = written.replace(readme_id, ours)
        return shlex.split(written)

    def same(self, expected: str, printed: str) -> bool:
        timing = re.compile(r"\(\d+\.\d+s\)")
        expected, printed = timing.sub("(s)", expected), timing.sub("(s)", printed)
        if expected.startswith("a new MLflow store: "):
            return printed == f"a new MLflow store: {self.where / 'mlflow.db'}"
        parts, got = ID.split(expected), ID.split(printed)
        if parts != got:
            return False
        for readme_id, ours in zip(ID.findall(expected), ID.findall(printed), strict=True):
            if self.ids.setdefault(readme_id, ours) != ours:
                return False
        return True


def test_the_console_blocks_print_what_the_readme_shows(tmp_path, capfd):
    """Bad input, how a command ends and a resume, in the README's order, in one directory where no
    store is yet (as the README's first run finds it); on the digits."""
    transcript = Transcript(tmp_path)
    steps = [
        step for block in blocks(readme()) if block.language == "console" for step in console_steps(block)
    ]
    assert steps
    for written, expected in steps:
        argv = transcript.command(written)
        assert argv[:3] == ["python", "-m", "nnexp.run"], written
        capfd.readouterr()
        status = run_in_process(tmp_path, *argv[3:], env={"MLFLOW_TRACKING_URI": None})
        out, err = capfd.readouterr()
        printed = out.splitlines() + err.splitlines()
        assert len(printed) == len(expected), f"$ {written}\n{out}{err}"
        for want, got in zip(expected, printed, strict=True):
            assert transcript.same(want, got), f"$ {written}\nREADME:  {want}\nprinted: {got}"
        assert (status == 0) == (" FINISHED" in out), f"$ {written}: exit status {status}"


# --- Slow: every command, as written or shortened ---------------------------------------------------------


@dataclass
class Story:
    """The README's commands in its order, in one directory and store, as a new user would run them;
    the ids its placeholders stand for."""

    where: Path
    capfd: pytest.CaptureFixture
    interruptible: object
    done: dict[tuple[str, ...], list[Run]] = field(default_factory=dict)  # a command run before: its runs
    last: dict[str, str] = field(default_factory=dict)  # "last run", "last sweep": from the last lines

    def client(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.where / 'mlflow.db'}")

    def state(self) -> dict[str, int | None]:
        client = self.client()
        if not (self.where / "mlflow.db").exists():
            return {}
        return {
            run.info.run_id: run.info.end_time
            for run in client.search_runs([e.experiment_id for e in client.search_experiments()])
        }

    def ended(self, before: dict[str, int | None]) -> list[Run]:
        """The runs (not sweeps' parents) a command ended since ``before``, in job order."""
        client = self.client()
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        changed = [
            run
            for run in runs
            if before.get(run.info.run_id, -1) != run.info.end_time and "nnexp.sweep" not in run.data.tags
        ]
        return sorted(changed, key=lambda run: (int(run.data.tags.get("nnexp.job", 0)), run.info.start_time))

    def run(self, argv: list[str]) -> list[Run]:
        """``python -m nnexp.run *argv`` (or ``nnexp.report``, ``nnexp.ensemble``) here, in this process;
        the runs it ended (a command of the same arguments run before is not run again)."""
        if tuple(argv) in self.done:
            return self.done[tuple(argv)]
        before = self.state()
        self.capfd.readouterr()
        if argv[:3] in (["python", "-m", "nnexp.report"], ["python", "-m", "nnexp.ensemble"]):
            with pytest.MonkeyPatch.context() as here:
                here.chdir(self.where)
                here.delenv("MLFLOW_TRACKING_URI", raising=False)
                status = {"nnexp.report": report.main, "nnexp.ensemble": ensemble.main}[argv[2]](argv[3:])
        else:
            assert argv[:3] == ["python", "-m", "nnexp.run"]
            status = run_in_process(self.where, *argv[3:], env={"MLFLOW_TRACKING_URI": None})
        out, err = self.capfd.readouterr()
        assert status == 0, f"{shlex.join(argv)}\n{out}\n{err}"
        for kind, flag in (("last run", "--runs"), ("last sweep", "--sweep")):
            if found := re.search(
                rf"^report: python -m nnexp.report {flag} ({ID.pattern})$", out, re.MULTILINE
            ):
                self.last[kind] = found.group(1)
        self.done[tuple(argv)] = self.ended(before)
        return self.done[tuple(argv)]

    def interrupted(self, *args: str, after: str) -> str:
        """Ctrl-C to ``python -m nnexp.run *args`` once it prints ``after``: the id its last line gives."""
        process = subprocess.Popen(
            [sys.executable, "-m", "nnexp.run", *args],
            cwd=self.where,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
            preexec_fn=self.interruptible,
        )
        next(line for line in process.stdout if after in line)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 130, err
        return re.fullmatch(
            rf"resume: python -m nnexp.run resume=({ID.pattern})", err.splitlines()[-1]
        ).group(1)

    def id(self, kind: str) -> str:
        if kind == "interrupted run" and kind not in self.last:
            self.last[kind] = self.interrupted(after="epoch 2/30")
        if kind == "interrupted sweep" and kind not in self.last:
            self.last[kind] = self.interrupted("-m", "data.train_size=10000", "seed=5,6", after="epoch 2/30")
        return self.last[kind]


def check_figures(comment: str, runs: list[Run], command: str) -> None:
    for split, values in figures(comment):
        reached = [100 * run.data.metrics[f"best_{split}_accuracy"] for run in runs]
        assert len(reached) == len(values), f"{command}: {len(reached)} runs for {values}"
        for value, got in zip(values, reached, strict=True):
            assert abs(got - value) <= TOLERANCE, f"{command}: {split} {got:.2f}%, the README says {value}%"


def readme_python(first_line: str) -> str:
    (block,) = [
        block for block in blocks(readme()) if block.language == "python" and block.lines[0] == first_line
    ]
    return "\n".join(block.lines)


@pytest.mark.slow
@pytest.mark.mnist
def test_every_command_runs_as_written_and_gives_its_figure(tmp_path, capfd, interruptible):
    """About 10 minutes on an idle 2-core machine: the README's training commands as a new user types
    them, in its order, in one store; the long ones shortened (``EXAMPLES``)."""
    story = Story(tmp_path, capfd, interruptible)
    engine = PYTHON["from nnexp.engine import Network, load, sgd"]
    assert engine.kind == "run"
    namespace: dict = {}
    with pytest.MonkeyPatch.context() as here:
        here.chdir(tmp_path)
        code = readme_python("from nnexp.engine import Network, load, sgd")
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (the README's own example)
    for split, (value,) in figures(code):
        got = 100 * max(epoch[f"{split}_accuracy"] for epoch in namespace["history"])
        assert abs(got - value) <= TOLERANCE, f"the engine's example: {split} {got:.2f}%, README {value}%"

    # The model snippet loads "the last run" as a reader meets it: the last run before its section ends
    order = list(dict.fromkeys(block.section for block in blocks(readme())))
    (snippet,) = [b for b in blocks(readme()) if b.language == "python" and b.lines[0] == "import os"]
    snippet_run = None
    for command in (command for command in bash_commands(readme()) if tried_here(command)):
        if snippet_run is None and order.index(command.section) > order.index(snippet.section):
            snippet_run = story.id("last run")
        example = EXAMPLES[command.text]
        if example.kind in ("first", "skip"):
            continue
        text = re.sub(r"<[a-z -]+>", story.id(example.id), command.text) if example.id else command.text
        runs = story.run([*shlex.split(text), *example.extra])
        if example.kind == "run":
            check_figures(command.comment, runs, command.text)

    model = readme_python("import os")
    printed = subprocess.run(
        [sys.executable, "-c", re.sub(r"<run id>", snippet_run or story.id("last run"), model)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        check=False,
    )
    assert printed.returncode == 0 and "Downloading artifacts" not in printed.stderr, printed.stderr
    promised = re.search(r"\[[\d ]+\]", model).group(0)  # the digits the comment names
    assert printed.stdout.strip() == promised
