"""Bad input and broken surroundings, told in one line: the family of errors a user can mend, and its
one printer.

Anything a user can put right (a value out of range, an unknown run id, a store that is missing or
refuses) raises a ``UserError`` whose message names the bad value and what is accepted. The entry
points say it with ``say`` (through ``one_line`` or ``reported``): one line, exit status 1, no
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import ParamSpec

from hydra.errors import CompactHydraException

P = ParamSpec("P")


class UserError(CompactHydraException):
    """Something the user can mend. (Hydra, too, prints a CompactHydraException as its message alone.)"""


class ConfigError(UserError):
    """A value the configuration does not accept, or a command that cannot run as given."""


class StoreError(UserError):
    """The MLflow store cannot be used: missing, corrupt, not answering, refusing."""


class NotFound(UserError):
    """A run, sweep, experiment or study that is not in the store."""


def line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def say(error: BaseException, prog: str | None = None) -> int:
    """Print ``error`` in one line on stderr, ``prog: error: <message>`` for a command with a name, the
    message alone for a run (as Hydra prints its own errors); the exit status, 1."""
    print(f"{prog}: error: {line(error)}" if prog else line(error), file=sys.stderr)
    return 1


def one_line(
    prog: str, also: tuple[type[BaseException], ...] = ()
) -> Callable[[Callable[P, int]], Callable[P, int]]:
    """Decorate a command's ``main`` (which returns its exit status) so that a ``UserError``, or one of
    ``also``, is said in one line and gives exit status 1."""

    def decorate(main: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(main)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except (UserError, *also) as error:
                return say(error, prog)

        return wrapped

    return decorate


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Exit with status 1 and the one line of a ``UserError`` raised inside (the run's entry point)."""
    try:
        yield
    except UserError as error:
        sys.exit(say(error))
