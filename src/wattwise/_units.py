"""Parse and format physical quantities: ``"2mJ"``, ``"1.5 MJ"``, ``"150 W"``, ``"20ms"``.

One energy formatter for every output (the report, the CLI, the progress lines, ``check``,
the model card), so a figure reads the same wherever it is shown.
"""

from __future__ import annotations

import math
import re
from typing import Any

from wattwise.errors import InputError

_PREFIX = {
    "": 1.0,
    "T": 1e12,
    "G": 1e9,
    "M": 1e6,
    "k": 1e3,
    "m": 1e-3,
    "u": 1e-6,
    "µ": 1e-6,
    "n": 1e-9,
}
_BASE = {"J": "J", "Wh": "Wh", "W": "W", "s": "s"}
_RE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([TGMkmuµn]?)(J|Wh|W|s)\s*$")


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


MISSING = "—"
"""What a figure that was not recorded reads as, wherever one is shown."""


def num(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` for missing, non-numeric, bool or NaN/inf:
    what every formatter shows as :data:`MISSING`.

    Bools are refused because ``True`` silently becoming ``1.0`` in a J/item column would be a
    wrong number, not a missing one.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"))


def format_si(value: float, unit: str, *, digits: int = 3, space: bool = True) -> str:
    """``value`` with an SI prefix from T down to n, ``digits`` significant figures.

    >>> format_si(0.00085, "s")
    '850 µs'
    """
    if value == 0:
        return f"0 {unit}".strip()
    factor, prefix = next(((f, p) for f, p in _SI if abs(value) >= f * 0.9995), (1e-9, "n"))
    scaled = value / factor
    # .3g would print 1000 as '1e+03' when rounding crosses the next prefix.
    text = f"{scaled:.{digits}g}"
    if "e" in text:
        text = f"{scaled:.0f}"
    sep = " " if space else ""
    return f"{text}{sep}{prefix}{unit}".strip()


def format_energy(joules: float | None) -> str:
    """Energy with an SI prefix, from nJ to the MJ and GJ a whole search can spend;
    :data:`MISSING` for ``None`` and for what is not a finite number.

    >>> format_energy(0.0021), format_energy(1.5e6), format_energy(None)
    ('2.1 mJ', '1.5 MJ', '—')
    """
    value = num(joules)
    return MISSING if value is None else format_si(value, "J")


def format_energy_figure(
    joules: float | None, source: str | None, uncertainty: float | None, *, per: str = ""
) -> str:
    """An energy figure as every line of text shows one: with its source and uncertainty, so
    an estimate never reads as a measurement (``2.1 mJ/item (estimated:cpu-ccf ±40%)``).

    Args:
        per: what the figure is per, appended to the unit (``"/item"``).
    """
    unc = f" ±{uncertainty:.0%}" if isinstance(uncertainty, int | float) else ""
    return f"{format_energy(joules)}{per} ({source or 'unknown source'}{unc})"
