"""The typed, closed configuration of one run, and its validation.

``conf/`` holds the values; the dataclasses here hold the *shape*: registered in Hydra's ConfigStore as
the first entry of ``conf/config.yaml``'s defaults list, they make the composed config closed (an unknown
key is an error) and typed (``train.epochs=abc`` is an error). Beside each field, what it accepts
(``accepting``, ``one_of``): the one place a key's range or set is written, whence ``validate`` checks
what types cannot say and every refusal, of a type or a range, names the key and what it accepts.
``nnexp.callbacks.ValidateCallback`` runs ``validate`` in the launching process, before Hydra creates an
output directory or the sweep callback creates an MLflow run, for every job of a sweep: bad input
creates nothing at all. ``build_network`` makes the engine's network of a valid config.

The schema declares no defaults (``MISSING``) so that the YAML files are the one place values live.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

from hydra.core.config_store import ConfigStore
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from nnexp import errors
from nnexp.engine import ConvPool, FullyConnected, Network, Softmax, components, data, training
from nnexp.errors import ConfigError
from nnexp.grammar import Overrides

ACCEPTS, INTERNAL = "nnexp.accepts", "nnexp.internal"  # the metadata of a schema field
RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow's: uuid4().hex, in every store nnexp uses
# conf/'s groups that are no key of the schema: presets chosen by name (experiment=..., search=...).
PRESET_GROUPS = ("experiment", "search")


def _anything(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class Accepts:
    """What one key accepts: ``words`` for a refusal to end with (``invalid train.eta=0.0: accepted a
    number > 0``) and ``ok``, the test of a value of the key's type.

    ``given`` narrows a key's range by the rest of the config (a dataset bounds ``data.train_size``);
    a type refused while Hydra composes, before there is a config, is answered with ``words``.
    """

    words: str
    ok: Callable[[Any], Any] = _anything
    given: Callable[[Config], Accepts | None] | None = None

    def within(self, c: Config) -> Accepts:
        """What the key accepts in the config ``c``."""
        return (self.given(c) if self.given else None) or self

    def allows(self, value: Any) -> bool:
        """Whether ``value`` (of the key's type) is accepted: null where the type allows it (an optional
        key's); nan and inf never, whatever ``ok`` says (``inf > 0``, and nan fails every comparison
        but ``!=``)."""
        if value is None:
            return True
        return not (isinstance(value, float) and not math.isfinite(value)) and bool(self.ok(value))


def accepting(
    words: str,
    ok: Callable[[Any], Any] = _anything,
    *,
    given: Callable[[Config], Accepts | None] | None = None,
    default: Any = MISSING,
    internal: bool = False,
) -> Any:
    """A field of the schema and what it accepts (an ``Accepts``); ``internal`` for a key that nnexp
    sets, never offered to a user."""
    return field(default=default, metadata={ACCEPTS: Accepts(words, ok, given), INTERNAL: internal})


def one_of(names: Iterable[str], default: Any = MISSING) -> Any:
    """A field that accepts one of the engine's ``names``, told in the engine's order."""
    names = tuple(names)
    return accepting("one of " + ", ".join(names), lambda name: name in names, default=default)


def _train_size_of(c: Config) -> Accepts | None:
    """``data.train_size`` once the dataset is known: at most its training set."""
    most = data.TRAIN_SIZES.get(c.data.name)
    if most is None:
        return None
    return Accepts(f"null (all) or an integer from 1 to {most} for {c.data.name}", lambda n: 1 <= n <= most)


def _backends_of(c: Config) -> Accepts | None:
    """``train.backend`` once the model is known: numba's compiled loop has no conv-pool layer."""
    if not c.model.conv:
        return None
    names = [name for name in training.BACKENDS if name != "numba"]
    return Accepts(f"one of {', '.join(names)} for conv-pool layers (numba has none)", names.__contains__)


@dataclass
class CostConfig:
    name: str = one_of(components.COSTS)


@dataclass
class ActivationConfig:
    name: str = one_of(components.ACTIVATIONS)


@dataclass
class InitConfig:
    name: str = one_of(components.INITIALIZERS)


@dataclass
class RegularizationConfig:
    name: str = one_of(components.REGULARIZERS)
    lmbda: float = accepting("a number >= 0", lambda lmbda: lmbda >= 0)
    # The dropout probability and where kept units are rescaled; only dropout.yaml sets them, the
    # others never read them.
    p: float = accepting("a probability in [0, 1)", lambda p: 0 <= p < 1, default=0.5)
    scaling: str = one_of(components.DROPOUT_SCALINGS, default="inverted")


@dataclass
class DataConfig:
    name: str = one_of(data.DATASETS)
    train_size: int | None = accepting(  # None = the whole training set
        "null (all) or an integer from 1 to the size of the dataset's training set ("
        + ", ".join(f"{size} for {name}" for name, size in data.TRAIN_SIZES.items())
        + ")",
        lambda n: 1 <= n <= max(data.TRAIN_SIZES.values()),
        given=_train_size_of,
    )
    expand: bool = accepting("true or false")


@dataclass(repr=False)
class ConvPoolConfig:
    """One layer of ``model.conv``: the engine's ``ConvPool(filters, kernel=kernel, pool=pool)``."""

    filters: int = MISSING
    kernel: int = MISSING
    pool: int = MISSING

    def __repr__(self) -> str:  # as the layer is written in an override
        return f"{{filters:{self.filters},kernel:{self.kernel},pool:{self.pool}}}"


@dataclass
class ModelConfig:
    """The network between the data's pixels and its classes: chapter 6's conv-pool layers, if any
    (``model=conv``; none in chapters 1-5's ``model=mlp``), then fully connected hidden layers, then
    the output layer the cost calls for."""

    conv: list[ConvPoolConfig] = accepting(
        "[] or a list of conv-pool layers of integers >= 1 (e.g. [{filters:20,kernel:5,pool:2}])",
        lambda layers: all(min(layer.filters, layer.kernel, layer.pool) >= 1 for layer in layers),
    )
    hidden: list[int] = accepting(  # hidden layer sizes; the input and output sizes come from the data
        "a list of layer sizes, each >= 1 (e.g. [30] or [100,30])", lambda sizes: all(n >= 1 for n in sizes)
    )


@dataclass
class TrainConfig:
    eta: float = accepting("a number > 0", lambda eta: eta > 0)
    epochs: int = accepting("an integer >= 1", lambda n: n >= 1)
    batch_size: int = accepting("an integer >= 1", lambda n: n >= 1)
    momentum: float = accepting("a number in [0, 1)", lambda mu: 0 <= mu < 1)
    schedule: str = one_of(training.SCHEDULES)
    early_stopping: int | None = accepting(  # n of the no-improvement-in-n rule
        "null (never) or an integer >= 1", lambda n: n >= 1
    )
    backend: str = accepting(  # the engine's: auto (numba when it can), numpy or numba
        "one of " + ", ".join(training.BACKENDS), lambda name: name in training.BACKENDS, given=_backends_of
    )
    # chapter 5's speed of learning of each hidden layer, logged every epoch and at epoch 0
    learning_speed: bool = accepting("true or false")
    order: str = one_of(components.ORDERS)  # of the mini-batches: shuffled every epoch, or network3's fixed


@dataclass
class TrackingConfig:
    experiment: str = accepting("a non-empty name", lambda name: bool(name.strip()))


@dataclass
class Config:
    cost: CostConfig = MISSING
    activation: ActivationConfig = MISSING
    init: InitConfig = MISSING
    regularization: RegularizationConfig = MISSING
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    train: TrainConfig = MISSING
    tracking: TrackingConfig = MISSING
    seed: int = accepting("an integer >= 0", lambda seed: seed >= 0)
    dtype: str = one_of(components.DTYPES)
    resume: str | None = accepting(  # see nnexp/resume.py, which refuses an id the store does not have
        "null or the id of a run or sweep to take up (32 lowercase hex characters)", RUN_ID.fullmatch
    )
    trial: int | None = accepting(  # see nnexp/search.py
        "null; a search sets it, for each of its jobs, to the job's trial number (an integer >= 0)",
        lambda n: n >= 0,
        internal=True,
    )


def _accepted(schema: type, prefix: str = "") -> Iterator[tuple[str, Accepts]]:
    """Every leaf key of ``schema``, dotted, with what it accepts. A key declared without is a
    ``TypeError`` as this module is imported: no key can be left unchecked."""
    hints = get_type_hints(schema)
    for f in fields(schema):
        key = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _accepted(hints[f.name], f"{key}.")
        elif ACCEPTS in f.metadata:
            yield key, f.metadata[ACCEPTS]
        else:
            raise TypeError(
                f"the schema's key {key} does not say what it accepts (declare it with accepting)"
            )


ACCEPTED: dict[str, Accepts] = dict(_accepted(Config))  # every leaf key of the schema, in its order


def _listed(schema: type, prefix: str = "") -> Iterator[tuple[type, str]]:
    """Each dataclass that a key of ``schema`` holds a list of, with that key: ``ConvPoolConfig`` in
    ``model.conv``."""
    hints = get_type_hints(schema)
    for f in fields(schema):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _listed(hint, f"{prefix}{f.name}.")
        elif get_origin(hint) is list and dataclasses.is_dataclass(get_args(hint)[0]):
            yield get_args(hint)[0], prefix + f.name


# OmegaConf names a field of a listed dataclass alone ("filters"): the list's key names it in a refusal
LISTED: dict[type, str] = dict(_listed(Config))


def register() -> None:
    """Make the schema available to ``conf/config.yaml`` (its first default). Idempotent."""
    ConfigStore.instance().store(name="nnexp_schema", node=Config)


def validate(cfg: DictConfig) -> Config:
    """The composed task config as a ``Config``, or ``ConfigError`` naming the first bad key.

    Hydra enforced the schema's types while it composed ``cfg``, but for a key added with ``+key=...``
    and a value left ``???``: both are refused here, then every key's range or set (``ACCEPTED``).
    """
    task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        _refuse_unknown_keys(task, Config)
        c: Config = OmegaConf.to_object(OmegaConf.merge(Config, task))  # Hydra's composed root is untyped
    except OmegaConfBaseException as error:
        raise ConfigError(_described(error)) from None
    for key, accepts in ACCEPTED.items():
        value = functools.reduce(getattr, key.split("."), c)
        accepts = accepts.within(c)
        if not accepts.allows(value):
            raise ConfigError(f"invalid {key}={_show(value)}: accepted {accepts.words}")
    _refuse_maps_that_do_not_fit(c)
    return c


def _refuse_unknown_keys(node: DictConfig, schema: type, prefix: str = "") -> None:
    """``ConfigError`` for a key of ``node`` that ``schema`` does not have: Hydra composes a key added
    with ``+key=...`` into the config, and OmegaConf would then drop it unsaid (or fail in many lines)."""
    hints = get_type_hints(schema)
    for key in node:
        if key not in hints:
            raise ConfigError(_unknown(f"{prefix}{key}", schema))
        if dataclasses.is_dataclass(hints[key]):
            _refuse_unknown_keys(node[key], hints[key], f"{prefix}{key}.")


def build_network(c: Config) -> Network:
    """The engine's network of a valid config, for its dataset's images and classes.

    Without conv-pool layers, chapters 1-5's ``Network(sizes)``. With them, chapter 6's stack of
    layers, where dropout is a layer's: ``regularization=dropout`` drops the inputs of every fully
    connected layer and of the output layer (network3's row 7), and keeps its lmbda as L2's."""
    shape, classes = data.IMAGE_SHAPES[c.data.name], data.N_CLASSES
    reg = c.regularization
    parts = dict(
        activation=c.activation.name,
        cost=c.cost.name,
        init=c.init.name,
        lmbda=reg.lmbda,
        seed=c.seed,
        dtype=c.dtype,
        dropout_scaling=reg.scaling,
    )
    if not c.model.conv:
        return Network([math.prod(shape), *c.model.hidden, classes], regularizer=reg.name, p=reg.p, **parts)
    output = Softmax if components.COSTS[c.cost.name].output is components.Softmax else FullyConnected
    dropout = reg.p if issubclass(components.REGULARIZERS[reg.name], components.Dropout) else 0.0
    layers = [
        *_conv_layers(c),
        *(FullyConnected(units, dropout=dropout) for units in c.model.hidden),
        output(classes, dropout=dropout),
    ]
    return Network(layers=layers, input_shape=shape, regularizer="l2" if dropout else reg.name, **parts)


def _conv_layers(c: Config) -> list[ConvPool]:
    return [ConvPool(layer.filters, kernel=layer.kernel, pool=layer.pool) for layer in c.model.conv]


def _refuse_maps_that_do_not_fit(c: Config) -> None:
    """``ConfigError`` for conv-pool layers too large for the dataset's images (or for the maps of the
    layer before), found by the engine as it connects them: to a bare output layer, so that checking
    every job of a sweep costs next to nothing (the fully connected layers fit any input)."""
    if not c.model.conv:
        return
    shape = data.IMAGE_SHAPES[c.data.name]
    try:
        Network(layers=[*_conv_layers(c), Softmax(data.N_CLASSES)], input_shape=shape, cost="loglikelihood")
    except ValueError as error:
        images = "x".join(map(str, shape[1:]))
        raise ConfigError(
            f"invalid model.conv={_show(c.model.conv)} for {images} images ({c.data.name}): {error}"
        ) from None


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # hydra/sweeper=basic


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The task overrides of every job of the sweep of ``config`` (``grammar.Overrides.jobs``): what
    Hydra's basic sweeper launches, and as far as a search's discrete sweeps go."""
    basic = config.hydra.sweeper.get("_target_") == BASIC_SWEEPER
    return Overrides.of_sweep(config).jobs(enumerate_only=basic)


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
        with errors.reported():
            try:
                yield
            except (ConfigCompositionException, OverrideParseException) as error:
                raise ConfigError(describe(error)) from None
    finally:
        del os.environ["HYDRA_FULL_ERROR"]


def describe(error: HydraException) -> str:
    """One line for one of Hydra's configuration errors (or ours)."""
    cause = error.__cause__
    if isinstance(error, MissingConfigException) and error.options:
        group, _, name = error.missing_cfg_file.rpartition("/")
        return f"unknown {group} {name!r} (accepted: {', '.join(error.options)})"
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        return _described(cause)
    if isinstance(error, OverrideParseException):
        return f"cannot parse the override {error.override!r}: {error.message.splitlines()[0]}"
    return str(error).splitlines()[0]


def _described(error: OmegaConfBaseException) -> str:
    """OmegaConf's refusal of a key (unknown) or of a value (of a wrong type, or left ``???``) in one
    line, in the words of the key's ``Accepts`` where the schema has it: ``train.eta='abc'`` is told
    what ``train.eta=0`` is told. Any other key (a group of keys, a search's setting) is told what its
    type accepts."""
    full_key = error.full_key
    if error.object_type in LISTED and full_key == error.key:  # a field of an item of a list, named alone
        full_key = f"{LISTED[error.object_type]}[].{error.key}"
    if isinstance(error, (ConfigAttributeError, ConfigKeyError)):
        return _unknown(full_key, _schema_beside(error))
    accepts = ACCEPTED.get(re.sub(r"\[\d*\].*", "", full_key))  # model.hidden[0]: model.hidden's
    words = accepts.words if accepts is not None else _type_words(error)
    if words is None or not isinstance(error, (ValidationError, MissingMandatoryValue)):
        return f"invalid {full_key}: {error.msg.splitlines()[0]}"
    if isinstance(error, MissingMandatoryValue):
        shown = MISSING
    else:
        shown = repr(error.value) if isinstance(error.value, str) else _show(error.value)
    return f"invalid {full_key}={shown}: accepted {words}"


# What a value of a scalar type is called in a refusal.
TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _type_words(error: OmegaConfBaseException) -> str | None:
    """What a key without an ``Accepts`` takes, told from its type in its dataclass: "one key at a
    time: train.eta, train.epochs, ..." for a group (``train=3``), "an integer" for the search's
    ``hydra.sweeper.n_trials``; None for a type without words."""
    schema, name = error.object_type, getattr(error, "key", None)
    if not dataclasses.is_dataclass(schema) or name not in get_type_hints(schema):
        return None
    hint = get_type_hints(schema)[name]
    optional = type(None) in get_args(hint)
    if optional:
        (hint,) = [arg for arg in get_args(hint) if arg is not type(None)]
    if dataclasses.is_dataclass(hint):
        words = "one key at a time: " + ", ".join(f"{error.full_key}.{f.name}" for f in fields(hint))
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        words = "one of " + ", ".join(hint.__members__)
    else:
        words = TYPE_WORDS.get(hint)
    return f"null or {words}" if optional and words else words


def _schema_beside(error: OmegaConfBaseException) -> type:
    """The dataclass where an unknown key was found: for "train.etaa", TrainConfig; for
    "hydra.sweeper.n_trial", the search's settings."""
    schema = error.object_type
    if not dataclasses.is_dataclass(schema):
        schema = Config
        for part in error.full_key.split(".")[:-1]:
            schema = get_type_hints(schema)[part]
    return schema


def _unknown(key: str, schema: type) -> str:
    """The refusal of an unknown key, offering the keys a user may set beside it: at the root, the
    presets' groups too, and never ``trial``, which only a search sets."""
    keys = [
        f.name
        for f in fields(schema)
        if not f.name.startswith("_") and f.name != "defaults" and not f.metadata.get(INTERNAL)
    ]
    if schema is Config:
        keys += PRESET_GROUPS
    return f"unknown key {key} (accepted: {', '.join(keys)})"


def _show(value: Any) -> str:
    return "null" if value is None else str(value).replace(" ", "")
