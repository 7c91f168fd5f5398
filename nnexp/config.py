"""The typed, closed configuration of one run, and its validation.

``conf/`` holds the values; the dataclasses here hold the *shape*: registered in Hydra's ConfigStore as
the first entry of ``conf/config.yaml``'s defaults list, they make the composed config closed (an unknown
key is an error) and typed (``train.epochs=abc`` is an error). What types cannot say -- ranges, names the
engine knows -- ``validate`` checks. ``ValidateCallback`` runs it in the launching process, before Hydra
creates an output directory or the sweep callback creates an MLflow run, for every job of a sweep: bad
input creates nothing at all.

The schema declares no defaults (``MISSING``) so that the YAML files are the one place values live.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from hydra import compose
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (
    CompactHydraException,
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from nnexp.engine import components, data, training


@dataclass
class NamedConfig:
    """A component chosen by name: cost, activation or init (one YAML file per name in conf/)."""

    name: str = MISSING


@dataclass
class RegularizationConfig:
    name: str = MISSING
    lmbda: float = MISSING
    p: float = 0.5  # the dropout probability; only dropout.yaml sets it, the others never read it


@dataclass
class DataConfig:
    name: str = MISSING
    train_size: int | None = MISSING  # None = the whole training set
    expand: bool = MISSING


@dataclass
class ModelConfig:
    hidden: list[int] = MISSING  # hidden layer sizes; the input and output sizes come from the data


@dataclass
class TrainConfig:
    eta: float = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    momentum: float = MISSING
    schedule: str = MISSING
    early_stopping: int | None = MISSING  # n of the no-improvement-in-n rule; None = never stop early
    backend: str = MISSING  # the engine's: auto (numba when it can), numpy or numba


@dataclass
class TrackingConfig:
    experiment: str = MISSING


@dataclass
class Config:
    cost: NamedConfig = MISSING
    activation: NamedConfig = MISSING
    init: NamedConfig = MISSING
    regularization: RegularizationConfig = MISSING
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    train: TrainConfig = MISSING
    tracking: TrackingConfig = MISSING
    seed: int = MISSING
    dtype: str = MISSING
    resume: str | None = MISSING  # a run (or sweep) id to take up: see nnexp/resume.py
    trial: int | None = MISSING  # the Optuna trial a search's job is: see nnexp/search.py


def register() -> None:
    """Make the schema available to ``conf/config.yaml`` (its first default). Idempotent.

    ``conf/hydra/launcher/submitit_*.yaml`` set nnexp's defaults on the submitit plugin's launchers
    of the same names: Hydra 1.3 merges them onto the plugin's schema, and warns that it will stop
    doing so; hydra-core is pinned to 1.3.8, where it does.
    """
    ConfigStore.instance().store(name="nnexp_schema", node=Config)
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/submitit_(local|slurm)' is validated", category=UserWarning
    )


class ConfigError(CompactHydraException):
    """An out-of-range value. Hydra prints a CompactHydraException as its message alone, no traceback."""


def validate(cfg: DictConfig) -> Config:
    """The composed task config as a ``Config``, or ``ConfigError`` naming the first bad key.

    Types and unknown keys were already enforced by the schema while Hydra composed ``cfg``.
    """
    task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    c: Config = OmegaConf.to_object(OmegaConf.merge(Config, task))  # Hydra's composed root is untyped
    t, r, d = c.train, c.regularization, c.data
    max_train = data.TRAIN_SIZES.get(d.name)
    checks = [
        ("cost.name", c.cost.name, c.cost.name in components.COSTS, _one_of(components.COSTS)),
        (
            "activation.name",
            c.activation.name,
            c.activation.name in components.ACTIVATIONS,
            _one_of(components.ACTIVATIONS),
        ),
        ("init.name", c.init.name, c.init.name in components.INITIALIZERS, _one_of(components.INITIALIZERS)),
        ("regularization.name", r.name, r.name in components.REGULARIZERS, _one_of(components.REGULARIZERS)),
        ("regularization.lmbda", r.lmbda, r.lmbda >= 0, "a number >= 0"),
        ("regularization.p", r.p, 0 <= r.p < 1, "a probability in [0, 1)"),
        ("data.name", d.name, max_train is not None, _one_of(data.DATASETS)),
        (
            "data.train_size",
            d.train_size,
            d.train_size is None or 1 <= d.train_size <= (max_train or 0),
            f"null (all) or an integer from 1 to {max_train} for {d.name}",
        ),
        (
            "model.hidden",
            c.model.hidden,
            all(size >= 1 for size in c.model.hidden),
            "a list of layer sizes, each >= 1 (e.g. [30] or [100,30])",
        ),
        ("train.eta", t.eta, t.eta > 0, "a number > 0"),
        ("train.epochs", t.epochs, t.epochs >= 1, "an integer >= 1"),
        ("train.batch_size", t.batch_size, t.batch_size >= 1, "an integer >= 1"),
        ("train.momentum", t.momentum, 0 <= t.momentum < 1, "a number in [0, 1)"),
        ("train.schedule", t.schedule, t.schedule in training.SCHEDULES, _one_of(training.SCHEDULES)),
        (
            "train.early_stopping",
            t.early_stopping,
            t.early_stopping is None or t.early_stopping >= 1,
            "null (never) or an integer >= 1",
        ),
        ("train.backend", t.backend, t.backend in training.BACKENDS, _one_of(training.BACKENDS)),
        ("dtype", c.dtype, c.dtype in components.DTYPES, _one_of(components.DTYPES)),
        (
            "tracking.experiment",
            c.tracking.experiment,
            bool(c.tracking.experiment.strip()),
            "a non-empty name",
        ),
    ]
    for key, value, ok, accepted in checks:
        if not ok:
            raise ConfigError(f"invalid {key}={_show(value)}: accepted {accepted}")
    return c


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # hydra/sweeper=basic


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The task overrides of every job a sweep's discrete grammar spells out, in Hydra's order:
    ``hydra.sweeper.params`` from the config (experiments and searches define sweeps there), then the
    command line, a key given on both taking the command line's value.

    Lists, ``choice``, ``range`` and ``glob`` are expanded into their product. An ``interval`` (or
    ``tag(log, interval(...))``) is left out: its values are a search's to pick, and are validated
    when each job composes. Hydra's basic sweeper cannot pick them: an interval given to it is an error.
    """
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += OmegaConf.to_container(config.hydra.overrides.task)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    values: dict[str, list[str]] = {}
    for override in parser.parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        elif config.hydra.sweeper.get("_target_") == BASIC_SWEEPER:
            raise ConfigError(
                f"{override.input_line}: the basic sweeper enumerates lists, choice, "
                "range and glob; an interval needs a search (search=...)"
            )
        else:
            values.pop(key, None)
    return [list(job) for job in itertools.product(*values.values())]


class ValidateCallback(Callback):
    """Rejects bad input in the launching process, before anything is created (listed first in
    ``hydra.callbacks`` so it runs before the sweep callback creates the parent run).

    Hydra turns an exception raised by a callback into a warning and carries on, so a bad config
    exits here with SystemExit: its one-line message, exit status 1.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            validate(config)
        except ConfigError as error:
            sys.exit(str(error))
        check_store(config)

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        def check(overrides: list[str]) -> None:
            try:
                validate(compose(config_name=config_name, overrides=overrides))
            except HydraException as error:
                sys.exit(f"{describe(error)} (in the job {' '.join(overrides)})")

        try:
            jobs = sweep_jobs(config)
            if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
                from nnexp import search  # only a search needs Optuna

                if search.is_search(config):
                    search.check(config, check)
        except HydraException as error:  # malformed sweep grammar, or a search that cannot run
            sys.exit(describe(error))
        for overrides in jobs:
            check(overrides)
        check_store(config)


def check_store(config: DictConfig) -> None:
    """Stop before anything is created if the MLflow store cannot be used (see ``store.check``)."""
    from nnexp import store  # here, not above: the store's module imports MLflow

    try:
        store.check(store.store_uri(), config.tracking.experiment)
    except store.StoreError as error:
        sys.exit(str(error))


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Report bad input as one line naming the key and what it accepts, and exit with status 1.

    Hydra prints its composition errors over several lines (search path, object types...). Setting
    HYDRA_FULL_ERROR makes Hydra raise them instead, to be summarized here; anything else still ends
    with its full traceback. A user who set HYDRA_FULL_ERROR gets Hydra's own report.
    """
    if os.environ.get("HYDRA_FULL_ERROR"):
        yield
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except (ConfigError, ConfigCompositionException, OverrideParseException) as error:
        sys.exit(describe(error))
    finally:
        del os.environ["HYDRA_FULL_ERROR"]


def describe(error: HydraException) -> str:
    """One line for one of Hydra's configuration errors (or ours)."""
    cause = error.__cause__
    if isinstance(error, MissingConfigException) and error.options:
        group, _, name = error.missing_cfg_file.rpartition("/")
        return f"unknown {group} {name!r} (accepted: {', '.join(error.options)})"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        return f"unknown key {cause.full_key} (accepted: {', '.join(_keys_beside(cause.full_key))})"
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        return f"invalid {cause.full_key}: {cause.msg.splitlines()[0]}"
    if isinstance(error, OverrideParseException):
        return f"cannot parse the override {error.override!r}: {error.message.splitlines()[0]}"
    return str(error).splitlines()[0]


def _keys_beside(full_key: str) -> list[str]:
    """The keys the schema allows where ``full_key`` was found: for "train.etaa", those of TrainConfig."""
    schema = Config
    for part in full_key.split(".")[:-1]:
        schema = get_type_hints(schema)[part]
    return [field.name for field in fields(schema)]


def _one_of(names) -> str:
    return "one of " + ", ".join(names)


def _show(value: Any) -> str:
    return "null" if value is None else str(value).replace(" ", "")
