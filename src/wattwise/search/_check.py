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


# A results.json of a 10,000-trial study is a few MB; a file past this is not one of ours, and
# reading it whole could exhaust memory on a CI runner.
MAX_RESULTS_BYTES = 64 << 20
# Source labels are short ASCII ("measured:rapl", "estimated:cpu-ccf"); anything else printed
# into a CI log could forge lines or drive the terminal (escape sequences).
MAX_SOURCE_CHARS = 120


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``results.json`` (schema 1) or raise :class:`InputError` saying why not.

    The file is read only if it is a regular file of at most 64 MiB, so ``/dev/zero``, a FIFO
    or a huge file is one error line, not a hang or an out-of-memory kill.
    """
    src = Path(path)
    text = decode_utf8(read_bounded(src, MAX_RESULTS_BYTES), what=str(src))
    data = parse_json(text, what=str(src))
    if not isinstance(data, dict):
        raise InputError(
            f"{src} is not a wattwise results file (expected a JSON object, got {_json_type(data)})"
        )
    schema = data.get("schema")
    if isinstance(schema, bool) or schema != RESULTS_SCHEMA:  # true == 1 in Python
        shown = schema if isinstance(schema, int | float | None) else _json_type(schema)
        raise InputError(
            f"{src} has results schema {shown!r}; this wattwise reads schema {RESULTS_SCHEMA}"
        )
    if "best" not in data or "baseline" not in data:
        raise InputError(f"{src} is not a wattwise results file (no 'best' or 'baseline')")
    for key in ("best", "baseline"):
        if data[key] is not None and not isinstance(data[key], dict):
            raise InputError(
                f"{src}: '{key}' must be a JSON object or null, got {_json_type(data[key])}"
            )
    return data


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def _figure(
    block: Mapping[str, Any],
    key: str,
    *,
    where: str = "best",
    low: float | None = None,
    low_ok: bool = False,
) -> float | None:
    """``block[key]`` as a float; ``None`` if absent or null (the CLI reports it missing).

    A figure that is there but is no finite number (NaN, Infinity, a string, a boolean), or
    is at or below ``low`` (``low_ok``: below it), e.g. an energy of 0 J, is a broken file, not a missing figure: it is
    refused by name, so a gate never passes on a negative energy nor calls NaN "missing".
    """
    value = block.get(key)
    if value is None:
        return None
    name = f"{where}.{key}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"results: {name} must be a number, got {_json_type(value)}")
    if not math.isfinite(value):
        raise InputError(f"results: {name} is {value!r}, not a finite number")
    if low is not None and (value < low if low_ok else value <= low):
        bound = "at least" if low_ok else "greater than"
        raise InputError(f"results: {name} is {value!r}; it must be {bound} {low:g}")
    return float(value)


def _source(block: Mapping[str, Any]) -> str | None:
    source = block.get("energy_source")
    if source is None:
        return None
    if (
        not isinstance(source, str)
        or not 0 < len(source) <= MAX_SOURCE_CHARS
        or not all(" " <= ch <= "~" for ch in source)
    ):
        shown = repr(source[:40]) if isinstance(source, str) else _json_type(source)
        raise InputError(
            f"results: best.energy_source must be a short source label such as "
            f"'measured:rapl', got {shown}"
        )
    return source


@dataclasses.dataclass(frozen=True)
class _BestFigures:
    """The figures of ``results["best"]`` that the check or its ``ok:`` line reads, each
    validated (``None``: not recorded)."""

    energy_j_per_item: float | None
    energy_uncertainty: float | None
    energy_source: str | None
    accuracy: float | None
    accuracy_drop: float | None
    latency_ms_p90: float | None

    @classmethod
    def read(cls, best: Mapping[str, Any]) -> _BestFigures:
        return cls(
            energy_j_per_item=_figure(best, "energy_j_per_item", low=0.0),
            energy_uncertainty=_figure(best, "energy_uncertainty", low=0.0, low_ok=True),
            energy_source=_source(best),
            accuracy=_figure(best, "accuracy"),
            accuracy_drop=_figure(best, "accuracy_drop"),
            latency_ms_p90=_figure(best, "latency_ms_p90", low=0.0, low_ok=True),
        )


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
    fig = _BestFigures.read(best)
    out: list[Breach] = []
    if e_max is not None:
        energy, unc = fig.energy_j_per_item, fig.energy_uncertainty
        label = fig.energy_source or "unknown source"
        label += f" ±{unc:.0%}" if unc is not None else ""
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
        drop = fig.accuracy_drop
        if drop is None:
            baseline = results.get("baseline")
            base = _figure(
                baseline if isinstance(baseline, Mapping) else {}, "accuracy", where="baseline"
            )
            acc = fig.accuracy
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
        p90 = fig.latency_ms_p90
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
