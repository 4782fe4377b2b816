"""Checks for the fields of pass configs, called from their ``__post_init__``.

Each reads ``config.<field>``, raises :class:`~wattwise.errors.InputError` naming
``Class.field`` and what it must be, and stores the normalised value back into the frozen
dataclass (a float for a number, so ``1`` and ``1.0`` serialise alike; a tuple for names, so
a YAML list stays hashable)::

    def __post_init__(self) -> None:
        number(self, "ratio", low=0.0, high=1.0, high_open=True)
        choice(self, "scope", SCOPES)
        names(self, "protect")
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from wattwise._core import check_choice
from wattwise.errors import InputError

__all__ = ["choice", "flag", "integer", "names", "number", "store"]


def store(config: object, field: str, value: object) -> None:
    """Normalise a field of a frozen dataclass inside ``__post_init__``."""
    object.__setattr__(config, field, value)


def _what(config: object, field: str) -> str:
    return f"{type(config).__name__}.{field}"


def choice(config: object, field: str, choices: Iterable[str]) -> None:
    """One of ``choices``."""
    check_choice(getattr(config, field), choices, what=_what(config, field))


def flag(config: object, field: str) -> None:
    """``True`` or ``False`` (not 0, 1 or ``"yes"``)."""
    value = getattr(config, field)
    if not isinstance(value, bool):
        raise InputError(f"{_what(config, field)} must be true or false, got {value!r}")


def integer(config: object, field: str, *, low: int, high: int | None = None) -> None:
    """An integer (not a bool) in ``[low, high]``."""
    value = getattr(config, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{_what(config, field)} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise InputError(f"{_what(config, field)} must be <= {high}, got {value!r}")


def number(
    config: object,
    field: str,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    """A finite number within bounds (``optional``: or ``None``), stored as a float."""
    value = getattr(config, field)
    if optional and value is None:
        return
    try:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        ok = False
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (
            high is None or (v < high if high_open else v <= high)
        )
    if not ok:
        lo = f"({low}" if low_open else f"[{low}"
        hi = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise InputError(f"{_what(config, field)} must be a number in {lo}, {hi}, got {value!r}")
    store(config, field, float(value))


def names(config: object, field: str) -> None:
    """Module names, stored as a tuple (a YAML list arrives as a list; a lone string is one
    name)."""
    value = getattr(config, field)
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"{_what(config, field)} must be a list of module names, got {value!r}")
    store(config, field, tuple(value))
