"""Budgets for CI: ``wattwise check results.json --max-energy-per-item 2mJ --max-accuracy-drop 0.01``.

The check reads the ``best`` entry of a results file (the deployment a search would ship) and
compares it with each budget given. A broken budget is reported with the figure, the budget and
by how much it is exceeded; an energy figure keeps its source label, so a CI log never shows an
estimate as if it were measured.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wattwise._units import format_energy
from wattwise.errors import InputError

__all__ = ["Breach", "check_results", "load_results"]

RESULTS_SCHEMA = 1


@dataclasses.dataclass(frozen=True)
class Breach:
    """One broken budget.

    Attributes:
        budget: ``energy_per_item``, ``accuracy_drop`` or ``latency_p90``.
        value, limit: the figure and its budget (J, fraction, ms).
        message: one line saying which budget broke and by how much.
    """

    budget: str
    value: float
    limit: float
    message: str


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``results.json`` (schema 1) or raise :class:`InputError` saying why not."""
    src = Path(path)
    try:
        text = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"cannot read {src}: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{src} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise InputError(f"{src} is not a wattwise results file (expected a JSON object)")
    if data.get("schema") != RESULTS_SCHEMA:
        raise InputError(
            f"{src} has results schema {data.get('schema')!r}; this wattwise reads schema {RESULTS_SCHEMA}"
        )
    if "best" not in data or "baseline" not in data:
        raise InputError(f"{src} is not a wattwise results file (no 'best' or 'baseline')")
    return data


def _figure(best: Mapping[str, Any], key: str) -> float | None:
    value = best.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _limit(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise InputError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def check_results(
    results: Mapping[str, Any],
    *,
    max_energy_j_per_item: float | None = None,
    max_accuracy_drop: float | None = None,
    max_latency_p90_ms: float | None = None,
) -> list[Breach]:
    """The budgets ``results["best"]`` breaks (empty: all hold).

    A results file without a best deployment (nothing met the search's constraints) breaks
    every budget given, since there is nothing to ship.

    Example:
        >>> check_results(load_results("wattwise-out/results.json"), max_energy_j_per_item=2e-3)
        []
    """
    e_max = _limit("max energy per item", max_energy_j_per_item)
    d_max = _limit("max accuracy drop", max_accuracy_drop)
    l_max = _limit("max p90 latency", max_latency_p90_ms)
    if d_max is not None and d_max > 1:
        raise InputError(f"max accuracy drop is a fraction (0.01 = one point), got {d_max!r}")
    given = [
        (n, v)
        for n, v in (("energy_per_item", e_max), ("accuracy_drop", d_max), ("latency_p90", l_max))
        if v is not None
    ]
    if not given:
        raise InputError(
            "give at least one budget: --max-energy-per-item, --max-accuracy-drop or --max-latency-p90-ms"
        )
    best = results.get("best")
    if not isinstance(best, Mapping):
        return [
            Breach(
                name,
                math.nan,
                limit,
                f"{name.replace('_', ' ')}: no best deployment in the results (no candidate met the search's constraints)",
            )
            for name, limit in given
        ]
    out: list[Breach] = []
    if e_max is not None:
        energy = _figure(best, "energy_j_per_item")
        source = best.get("energy_source") or "unknown source"
        unc = _figure(best, "energy_uncertainty")
        label = f"{source}{f' ±{unc:.0%}' if unc is not None else ''}"
        if energy is None:
            out.append(
                Breach(
                    "energy_per_item", math.nan, e_max, "energy per item: missing from the results"
                )
            )
        elif energy > e_max:
            over = energy - e_max
            rel = f" ({over / e_max:.0%})" if e_max > 0 else ""
            out.append(
                Breach(
                    "energy_per_item",
                    energy,
                    e_max,
                    f"energy per item {format_energy(energy)} ({label}) exceeds the budget "
                    f"{format_energy(e_max)} by {format_energy(over)}{rel}",
                )
            )
    if d_max is not None:
        drop = _figure(best, "accuracy_drop")
        if drop is None:
            base = _figure(results.get("baseline") or {}, "accuracy")
            acc = _figure(best, "accuracy")
            drop = base - acc if base is not None and acc is not None else None
        if drop is None:
            out.append(
                Breach("accuracy_drop", math.nan, d_max, "accuracy drop: missing from the results")
            )
        elif drop > d_max + 1e-12:
            out.append(
                Breach(
                    "accuracy_drop",
                    drop,
                    d_max,
                    f"accuracy drop {drop * 100:.2f} points exceeds the budget {d_max * 100:.2f} "
                    f"points by {(drop - d_max) * 100:.2f} points",
                )
            )
    if l_max is not None:
        p90 = _figure(best, "latency_ms_p90")
        if p90 is None:
            out.append(
                Breach("latency_p90", math.nan, l_max, "p90 latency: missing from the results")
            )
        elif p90 > l_max:
            out.append(
                Breach(
                    "latency_p90",
                    p90,
                    l_max,
                    f"p90 latency {p90:.3g} ms exceeds the budget {l_max:.3g} ms by {p90 - l_max:.3g} ms",
                )
            )
    return out
