"""Budgets for CI: ``wattwise check results.json --max-energy-per-item 2mJ --max-accuracy-drop 0.01``.

The check reads the ``best`` entry of a results file (the deployment a search would ship) and
compares it with each budget given. A broken budget is reported with the figure, the budget and
by how much it is exceeded; an energy figure keeps its source label, so a CI log never shows an
estimate as if it were measured.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wattwise._fs import decode_utf8, parse_json, read_bounded
from wattwise._units import format_energy, format_energy_figure
from wattwise.errors import InputError
from wattwise.results import Figures, Results, check_schema, json_type

__all__ = ["Breach", "check_results", "load_results"]


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


# A results.json of a 10,000-trial study is a few MB; a file past this is not one of ours, and
# reading it whole could exhaust memory on a CI runner.
MAX_RESULTS_BYTES = 64 << 20


def load_results(path: str | os.PathLike[str]) -> Results:
    """Read a ``results.json`` (schema 1) or raise :class:`InputError` saying why not.

    The file is read only if it is a regular file of at most 64 MiB, so ``/dev/zero``, a FIFO
    or a huge file is one error line, not a hang or an out-of-memory kill; every field is
    then checked as :meth:`Results.from_dict` checks it.
    """
    src = Path(path)
    text = decode_utf8(read_bounded(src, MAX_RESULTS_BYTES), what=str(src))
    data = parse_json(text, what=str(src))
    if not isinstance(data, dict):
        raise InputError(
            f"{src} is not a wattwise results file (expected a JSON object, got {json_type(data)})"
        )
    check_schema({"schema": data.get("schema")}, what=str(src))  # a file must say its schema
    if "best" not in data or "baseline" not in data:
        raise InputError(f"{src} is not a wattwise results file (no 'best' or 'baseline')")
    for key in ("best", "baseline"):
        if data[key] is not None and not isinstance(data[key], dict):
            raise InputError(
                f"{src}: '{key}' must be a JSON object or null, got {json_type(data[key])}"
            )
    return Results.from_dict(data)


def _bounded(value: float | None, name: str, *, low: float, low_ok: bool = False) -> float | None:
    """``value`` if above ``low`` (``low_ok``: at or above it). A figure at or below it, e.g.
    an energy of 0 J, is a broken file, not a missing figure: it is refused by name, so a gate
    never passes on a negative energy (NaN and strings ``from_dict`` has refused already)."""
    if value is not None and (value < low if low_ok else value <= low):
        bound = "at least" if low_ok else "greater than"
        raise InputError(f"results: {name} is {value!r}; it must be {bound} {low:g}")
    return value


def _checked_best(best: Figures) -> Figures:
    """The figures of the best entry that the check or its ``ok:`` line reads, each within its
    bounds (``None``: not recorded)."""
    _bounded(best.energy_j_per_item, "best.energy_j_per_item", low=0.0)
    _bounded(best.energy_uncertainty, "best.energy_uncertainty", low=0.0, low_ok=True)
    _bounded(best.latency_ms_p90, "best.latency_ms_p90", low=0.0, low_ok=True)
    _bounded(best.tbt_ms_p90, "best.tbt_ms_p90", low=0.0, low_ok=True)
    return best


def _limit(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise InputError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def check_results(
    results: Results | Mapping[str, Any],
    *,
    max_energy_j_per_item: float | None = None,
    max_accuracy_drop: float | None = None,
    max_latency_p90_ms: float | None = None,
) -> list[Breach]:
    """The budgets the results' best deployment breaks (empty: all hold).

    A results document without a best deployment (nothing met the search's constraints)
    breaks every budget given, since there is nothing to ship. ``results`` may be the dict of
    a results.json (read with :meth:`Results.from_dict`).

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
    doc = results if isinstance(results, Results) else Results.from_dict(results)
    if doc.best is None:
        return [
            Breach(
                name,
                math.nan,
                limit,
                f"{name.replace('_', ' ')}: no best deployment in the results (no candidate met the search's constraints)",
            )
            for name, limit in given
        ]
    fig = _checked_best(doc.best.figures)
    out: list[Breach] = []
    if e_max is not None:
        energy = fig.energy_j_per_item
        if energy is None:
            out.append(
                Breach(
                    "energy_per_item", math.nan, e_max, "energy per item: missing from the results"
                )
            )
        elif energy > e_max:
            over = energy - e_max
            rel = f" ({over / e_max:.0%})" if e_max > 0 else ""
            figure = format_energy_figure(energy, fig.energy_source, fig.energy_uncertainty)
            out.append(
                Breach(
                    "energy_per_item",
                    energy,
                    e_max,
                    f"energy per item {figure} exceeds the budget "
                    f"{format_energy(e_max)} by {format_energy(over)}{rel}",
                )
            )
    if d_max is not None:
        drop = doc.best.accuracy_drop
        if drop is None:
            base, acc = doc.baseline.figures.accuracy, fig.accuracy
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
        p90 = fig.latency_bound_ms  # a generative task's: the time between tokens
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
                    f"p90 {'time between tokens' if fig.tbt_ms_p90 is not None else 'latency'} {p90:.3g} ms exceeds the budget {l_max:.3g} ms by {p90 - l_max:.3g} ms",
                )
            )
    return out
