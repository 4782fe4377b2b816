"""Parse and format physical quantities: ``"2mJ"``, ``"0.5 J"``, ``"150 W"``, ``"20ms"``."""

from __future__ import annotations

import math
import re

from wattwise.errors import InputError

_PREFIX = {"": 1.0, "k": 1e3, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9}
_BASE = {"J": "J", "Wh": "Wh", "W": "W", "s": "s"}
_RE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([kmuµn]?)(J|Wh|W|s)\s*$")


def parse_quantity(text: str, unit: str) -> float:
    """Return ``text`` in base units of ``unit`` (J, W, s); Wh is accepted for J.

    >>> parse_quantity("2mJ", "J")
    0.002
    >>> parse_quantity("0.5 J", "J")
    0.5
    """
    if not isinstance(text, str):
        raise InputError(f"expected a quantity like '2mJ', got {text!r}")
    match = _RE.match(text)
    if match is None:
        try:  # a bare number is taken in base units
            value = float(text)
        except ValueError:
            raise InputError(
                f"cannot read {text!r} as a quantity in {unit} (e.g. '2m{unit}')"
            ) from None
        got = unit
    else:
        value = float(match.group(1)) * _PREFIX[match.group(2)]
        got = match.group(3)
        if got == "Wh" and unit == "J":
            value *= 3600.0
        elif got != unit:
            raise InputError(f"{text!r} is in {got}, expected {unit}")
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{text!r} must be a finite, non-negative quantity")
    return value


def format_energy(joules: float) -> str:
    """Human form with an SI prefix: ``0.0021 → '2.1 mJ'``."""
    if not math.isfinite(joules):
        return str(joules)
    for factor, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")):
        if abs(joules) >= factor or factor == 1e-9:
            return f"{joules / factor:.3g} {prefix}J"
    return f"{joules} J"
