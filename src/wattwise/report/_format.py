"""Numbers with their units, as the report shows them: ``2.1 mJ``, ``850 µs``, ``±5%``.

Every formatter takes what may be missing (``None``, NaN, a value that is no number) and
returns :data:`MISSING` for it instead of raising: a failed trial has no energy.
"""

from __future__ import annotations

import decimal
import math
from typing import Any

from wattwise._units import MISSING, format_energy, format_si

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


def num(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` for missing, non-numeric, bool or NaN/inf.

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


def fmt_uncertainty(relative: Any) -> str:
    """A relative uncertainty as ``±5%``; missing stays missing (never shown as ±0%)."""
    value = num(relative)
    if value is None:
        return MISSING
    return f"±{value * 100:.2g}%"


def fmt_latency_ms(ms: Any) -> str:
    """Milliseconds shown in the unit that reads best: ``0.85 → '850 µs'``."""
    value = num(ms)
    return MISSING if value is None else format_si(value * 1e-3, "s")


def fmt_duration_s(seconds: Any) -> str:
    """Wall time: seconds below two minutes, then minutes, then hours."""
    value = num(seconds)
    if value is None:
        return MISSING
    if abs(value) < 120:
        return format_si(value, "s")
    if abs(value) < 7200:
        return f"{value / 60:.3g} min"
    return f"{value / 3600:.3g} h"


def fmt_bytes(size: Any) -> str:
    """Bytes with decimal SI prefixes (kB = 1000 B), matching what ``ls --si`` prints."""
    value = num(size)
    if value is None:
        return MISSING
    return f"{value:.0f} B" if abs(value) < 1000 else format_si(value, "B")


def fmt_count(count: Any, unit: str = "") -> str:
    """A count with an SI prefix: ``1_234_000 → '1.23 M'`` (``unit`` appended)."""
    value = num(count)
    if value is None:
        return MISSING
    if abs(value) < 1000:
        text = f"{value:.3g}" if value != int(value) else f"{int(value)}"
        return f"{text} {unit}".strip()
    return format_si(value, unit)


def fmt_items(count: Any) -> str:
    """A number of items in words, for sentences: ``548_000 → '548 thousand items'``."""
    value = num(count)
    if value is None:
        return MISSING
    for factor, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if abs(value) >= factor * 0.9995:
            return f"{value / factor:.3g} {word} items"
    return f"{math.ceil(value):d} items"


def fmt_mass_g(grams: Any) -> str:
    """Mass in grams with an SI prefix (CO2e): ``0.0123 → '12.3 mg'``."""
    value = num(grams)
    return MISSING if value is None else format_si(value, "g")


def fmt_money(amount: Any, currency: str = "USD") -> str:
    """An amount with three significant figures and its currency code."""
    value = num(amount)
    if value is None:
        return MISSING
    # Three figures without an exponent: '0.000005 USD' reads, '5e-06 USD' doesn't.
    return f"{decimal.Decimal(f'{value:.3g}'):f} {currency}"


def fmt_accuracy(value: Any) -> str:
    """A metric value: four decimals for the usual [0, 1] metrics, else four figures."""
    v = num(value)
    if v is None:
        return MISSING
    return f"{v:.4f}" if abs(v) <= 1 else f"{v:.4g}"


def fmt_ratio(value: Any) -> str:
    """A multiplicative ratio, ``0.42×``."""
    v = num(value)
    return MISSING if v is None else f"{v:.3g}×"
