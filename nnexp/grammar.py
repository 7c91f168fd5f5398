"""The command line's overrides and Hydra's sweep grammar, parsed in one place.

A sweep (``-m``) or a search reads the same lines: ``hydra.sweeper.params`` from the config (experiments
and search presets define sweeps there), then the command line, a key given on both taking the command
line's value. ``Overrides`` parses them once with Hydra's own parser; the basic sweep enumerates its
discrete sweeps (``jobs``), a search turns its sweeps into distributions (``nnexp.search``), and a
study's name is its fixed overrides.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from nnexp.errors import ConfigError

RESUME = "resume"  # the config key of ``resume=<run id>``: how a command was started, not what it runs
SIGNIFICANT = 4  # the digits of a number a label shows: train.eta=0.443, not a search's 0.44303752452182665


def without_resume(overrides: Sequence[str]) -> list[str]:
    """The overrides that make a run what it is: all but ``resume=<id>``."""
    return [line for line in overrides if not line.startswith(f"{RESUME}=")]


def join(overrides: Sequence[str]) -> str:
    """Overrides as one tag value: readable, and quoted where an override holds a space."""
    return shlex.join(overrides)


def split(value: str) -> list[str]:
    """The overrides a tag value made by ``join`` holds."""
    return shlex.split(value)


@dataclass(frozen=True)
class Overrides:
    """Parsed override lines, one per key, in the order each key first appears (a key given again
    takes the later value in the first place)."""

    by_key: dict[str, Override]

    @classmethod
    def parse(cls, lines: Sequence[str]) -> Overrides:
        """Raises Hydra's ``OverrideParseException`` for a line it cannot parse. ``glob`` needs the
        config loader: parse inside a Hydra context (a command, or ``initialize_config_dir``)."""
        loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
        by_key: dict[str, Override] = {}
        for override in OverridesParser.create(config_loader=loader).parse_overrides(list(lines)):
            by_key[override.get_key_element()] = override
        return cls(by_key)

    @classmethod
    def of_sweep(cls, config: DictConfig, command_line: Sequence[str] | None = None) -> Overrides:
        """The sweep of ``config``: ``hydra.sweeper.params``, then ``command_line`` (by default the
        command's own task overrides)."""
        params = config.hydra.sweeper.get("params") or {}
        if command_line is None:
            command_line = OmegaConf.to_container(config.hydra.overrides.task)
        return cls.parse([*(f"{key}={value}" for key, value in params.items()), *command_line])

    @property
    def fixed(self) -> list[str]:
        """The overrides that are not sweeps, as ``key=value`` lines."""
        return [
            f"{key}={o.get_value_element_as_str()}"
            for key, o in self.by_key.items()
            if not o.is_sweep_override()
        ]

    @property
    def shown(self) -> list[str]:
        """The overrides as a run's label shows them: one line per key, as given, but a number with more
        than ``SIGNIFICANT`` significant digits (what a search picks) rounded to them."""
        return [_shown(override) for override in self.by_key.values()]

    @property
    def swept(self) -> dict[str, Override]:
        return {key: o for key, o in self.by_key.items() if o.is_sweep_override()}

    def jobs(self, enumerate_only: bool) -> list[list[str]]:
        """The task overrides of every job the discrete sweeps spell out: lists, ``choice``, ``range``
        and ``glob`` expanded into their product, in Hydra's order. An ``interval`` (or ``tag(log,
        interval(...))``) is a search's to pick, so it is left out; a sweeper that can only
        ``enumerate_only`` (Hydra's basic one) refuses it."""
        values: dict[str, list[str]] = {}
        for key, override in self.by_key.items():
            if not override.is_sweep_override():
                values[key] = [f"{key}={override.get_value_element_as_str()}"]
            elif override.is_discrete_sweep():
                values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            elif enumerate_only:
                raise ConfigError(
                    f"{override.input_line}: the basic sweeper enumerates lists, choice, "
                    "range and glob; an interval needs a search (search=...)"
                )
        return [list(job) for job in itertools.product(*values.values())]


def _shown(override: Override) -> str:
    value = override.value()
    rounded = f"{value:.{SIGNIFICANT}g}" if isinstance(value, float) else None
    if rounded is None or float(rounded) == value:
        return override.input_line
    return f"{override.get_key_element()}={rounded}"
