"""Small things every layer shares: whether something can run here, the names of modes and
scenarios, one-line error text, and the checks for a choice among names.

This module imports nothing of wattwise but :mod:`wattwise.errors`, so any layer may import
it (see ``docs/architecture.md``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TypeVar

from wattwise.errors import InputError

__all__ = ["MODES", "SCENARIOS", "Availability", "check_choice", "first_line", "one_line"]

MODES = ("inference", "train")
"""What ``measure`` can time: a forward pass, or a training step (forward, backward, update)."""

SCENARIOS = ("offline", "online")
"""How a deployment is served: ``offline`` batches what is waiting; ``online`` answers one
request at a time under a latency budget (see ``docs/search.md``)."""

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Availability:
    """Whether a meter or a backend can run here, and if not, why."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def first_line(exc: BaseException | str, *, default: str = "") -> str:
    """The first non-blank line of an exception's message (or of a text), stripped.

    >>> first_line(ValueError("bad shape\\n  more detail"))
    'bad shape'
    """
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else default


def one_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``, for errors that must fit on one line."""
    line = first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def check_choice(value: _T, choices: Iterable[_T], *, what: str) -> _T:
    """``value`` if it is one of ``choices``.

    Raises:
        InputError: it is not; the message lists the choices.
    """
    options = tuple(choices)
    if value not in options:
        raise InputError(f"{what} must be one of {', '.join(map(str, options))}, got {value!r}")
    return value
