"""Numbers with their units, as the report shows them: ``2.1 mJ``, ``850 µs``, ``±5%``.

Every formatter takes what may be missing (``None``, NaN, a value that is no number) and
returns :data:`MISSING` for it instead of raising: a failed trial has no energy.
"""

from __future__ import annotations

import decimal
import functools
import math
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec

from wattwise._units import MISSING, format_energy, format_si, num

__all__ = [
    "MISSING",
    "fmt_accuracy",
    "fmt_bytes",
    "fmt_count",
    "fmt_duration_s",
    "fmt_energy_j",
    "fmt_items",
    "fmt_latency_ms",
    "fmt_mass_g",
    "fmt_money",
    "fmt_ratio",
    "fmt_uncertainty",
    "num",
]

fmt_energy_j = format_energy
"""Energy with an SI prefix (``0.0021 → '2.1 mJ'``, ``1.5e6 → '1.5 MJ'``): wattwise's one
energy formatter, :func:`wattwise._units.format_energy`."""

_P = ParamSpec("_P")


def _or_missing(fmt: Callable[Concatenate[float, _P], str]) -> Callable[Concatenate[Any, _P], str]:
    """A formatter of a finite number that shows :data:`MISSING` for anything :func:`num`
    refuses, instead of each formatter checking for itself."""

    @functools.wraps(fmt)
    def formatted(value: Any, /, *args: _P.args, **kwargs: _P.kwargs) -> str:
        number = num(value)
        return MISSING if number is None else fmt(number, *args, **kwargs)

    return formatted


@_or_missing
def fmt_uncertainty(relative: float) -> str:
    """A relative uncertainty as ``±5%``; missing stays missing (never shown as ±0%)."""
    return f"±{relative * 100:.2g}%"


@_or_missing
def fmt_latency_ms(ms: float) -> str:
    """Milliseconds shown in the unit that reads best: ``0.85 → '850 µs'``."""
    return format_si(ms * 1e-3, "s")


@_or_missing
def fmt_duration_s(seconds: float) -> str:
    """Wall time: seconds below two minutes, then minutes, then hours."""
    if abs(seconds) < 120:
        return format_si(seconds, "s")
    if abs(seconds) < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


@_or_missing
def fmt_bytes(size: float) -> str:
    """Bytes with decimal SI prefixes (kB = 1000 B), matching what ``ls --si`` prints."""
    return f"{size:.0f} B" if abs(size) < 1000 else format_si(size, "B")


@_or_missing
def fmt_count(count: float, unit: str = "") -> str:
    """A count with an SI prefix: ``1_234_000 → '1.23 M'`` (``unit`` appended)."""
    if abs(count) < 1000:
        text = f"{count:.3g}" if count != int(count) else f"{int(count)}"
        return f"{text} {unit}".strip()
    return format_si(count, unit)


@_or_missing
def fmt_items(count: float) -> str:
    """A number of items in words, for sentences: ``548_000 → '548 thousand items'``."""
    for factor, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if abs(count) >= factor * 0.9995:
            return f"{count / factor:.3g} {word} items"
    return f"{math.ceil(count):d} items"


@_or_missing
def fmt_mass_g(grams: float) -> str:
    """Mass in grams with an SI prefix (CO2e): ``0.0123 → '12.3 mg'``."""
    return format_si(grams, "g")


@_or_missing
def fmt_money(amount: float, currency: str = "USD") -> str:
    """An amount with three significant figures and its currency code."""
    # Three figures without an exponent: '0.000005 USD' reads, '5e-06 USD' doesn't.
    return f"{decimal.Decimal(f'{amount:.3g}'):f} {currency}"


@_or_missing
def fmt_accuracy(value: float) -> str:
    """A metric value: four decimals for the usual [0, 1] metrics, else four figures."""
    return f"{value:.4f}" if abs(value) <= 1 else f"{value:.4g}"


@_or_missing
def fmt_ratio(value: float) -> str:
    """A multiplicative ratio, ``0.42×``."""
    return f"{value:.3g}×"
