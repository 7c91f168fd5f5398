"""Bad input at every key, the keys taken from the schema itself (its dataclasses, walked here): for each
leaf key a value out of its range or set, values of a wrong type and, for numbers, nan and inf. Each is
refused in one line naming the key and what it accepts, in process as fast as Hydra composes; one key
of each kind is also tried end to end, where the refusal must also exit non-zero and create nothing."""

import dataclasses
import typing

import pytest
from hydra.errors import ConfigCompositionException

from nnexp import config


def leaves(schema: type = config.Config, prefix: str = "") -> typing.Iterator[tuple[str, typing.Any]]:
    """(dotted key, declared type) of every leaf key of ``schema``."""
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            yield from leaves(hint, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", hint


LEAVES = dict(leaves())


def shape(hint: typing.Any) -> tuple[type, bool, bool]:
    """(the scalar type, whether the key holds a list of it, whether it is optional) of a leaf's type."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        (hint,) = [arg for arg in args if arg is not type(None)]
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True, optional
    return hint, False, optional


# Values of each scalar type, as overrides, for a range or set to refuse, tried in turn until one is:
# every key with a range or set refuses one of them. A bool has none: its type allows only true or false.
OUT_OF_RANGE = {
    int: ["-1", "0", "1000000000"],
    float: ["-1.0", "0.0", "1.0"],
    str: ["''", "' '", "no_such_name"],
    bool: [],
}
# A list's items: a conv-pool layer's fields, each wrong in turn (an integer out of range, of a wrong
# type, not finite, missing)
LAYER = "{{filters:{},kernel:5,pool:2}}"
OUT_OF_RANGE[config.ConvPoolConfig] = [LAYER.format(0)]
WRONG_TYPE = {int: ["abc", "1.5"], float: ["abc"], str: ["[a,b]"], bool: ["maybe"]}
WRONG_TYPE[config.ConvPoolConfig] = [*map(LAYER.format, ["abc", 1.5, "nan"]), "{filters:20,kernel:5}", "30"]
NOT_FINITE = ["nan", "inf"]
GOOD_ITEM = {int: "30", config.ConvPoolConfig: LAYER.format(20)}  # beside a wrong one in a list


def out_of_range(key: str) -> list[str]:
    scalar, is_list, _ = shape(LEAVES[key])
    return [f"[{value}]" if is_list else value for value in OUT_OF_RANGE[scalar]]


def wrong(key: str) -> list[str]:
    """Values of a wrong type for ``key``, and nan and inf where it holds numbers."""
    scalar, is_list, optional = shape(LEAVES[key])
    values = WRONG_TYPE[scalar] + (NOT_FINITE if scalar in (int, float) else [])
    if is_list:
        values = ["abc", *(f"[{GOOD_ITEM[scalar]},{value}]" for value in values)]
    return values if optional else [*values, "null"]


def refusal(composer, override: str) -> str | None:
    """The line a command refuses ``override`` with (Hydra's refusal as ``describe`` tells it, else
    ``validate``'s), or None when it is accepted."""
    try:
        cfg = composer(override)
    except ConfigCompositionException as error:
        return config.describe(error)
    try:
        config.validate(cfg)
    except config.ConfigError as error:
        return str(error)
    return None


def assert_names(message: str | None, key: str) -> None:
    assert message is not None, f"{key}: accepted"
    assert "\n" not in message
    assert message.startswith(f"invalid {key}") and ": accepted " in message, message


def test_every_key_says_what_it_accepts():
    assert list(config.ACCEPTED) == list(LEAVES)
    for key, accepts in config.ACCEPTED.items():
        assert accepts.words, key
        assert accepts.words.startswith("null") == shape(LEAVES[key])[2], f"{key}: {accepts.words}"


@pytest.mark.parametrize("key,value", [(key, value) for key in LEAVES for value in wrong(key)])
def test_a_wrong_type_nan_or_inf_is_refused_in_one_line(composer, key, value):
    message = refusal(composer, f"{key}={value}")
    assert_names(message, key)
    assert message.endswith(f": accepted {config.ACCEPTED[key].words}")


@pytest.mark.parametrize("key", [key for key in LEAVES if out_of_range(key)])
def test_a_value_out_of_range_is_refused_in_one_line(composer, key):
    messages = (refusal(composer, f"{key}={value}") for value in out_of_range(key))
    message = next(filter(None, messages), None)
    assert message is not None, f"{key} accepts all of {out_of_range(key)}"
    assert_names(message, f"{key}=")


# One key of each kind, end to end (each costs a Python start): an int, a float, a choice, a list, an
# optional key.
END_TO_END = {
    "seed": "-1",
    "train.momentum": "nan",
    "train.schedule": "[constant,halve]",
    "model.hidden": "[30,abc]",
    "train.early_stopping": "abc",
}


@pytest.mark.parametrize("key,value", END_TO_END.items())
def test_bad_input_ends_the_command_in_one_line_creating_nothing(tmp_path, nnexp_run, key, value):
    assert key in LEAVES
    result = nnexp_run(f"{key}={value}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert_names(line, key)
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no outputs/ or multirun/
