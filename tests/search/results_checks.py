"""Checks of what a real search published, for the tests that run one (importable by name,
like ``search_helpers``): ``results.json`` round-trips through :class:`Results` byte for byte,
the schema knows every key the search wrote, and every figure the report and the summary show
is there (no "—" where the search has the value)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from pathlib import Path

from wattwise.report._serialise import TRIAL_COLUMNS, results_json_text
from wattwise.results import (
    FIGURE_KEYS,
    GENERATION_KEYS,
    MEASURED_KEYS,
    ROUND_KEYS,
    Figures,
    Results,
    TrialRow,
)

MISSING = "—"


def _table(page: str, opening: str) -> str:
    match = re.search(re.escape(opening) + r".*?</table>", page, re.S)
    assert match, f"no table {opening!r} in the report"
    return match.group(0)


def _cells(table: str) -> list[str]:
    """The text of each body cell (tags dropped)."""
    body = table.split("<tbody>", 1)[-1]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)
    return [re.sub(r"<[^>]+>", " ", c).strip() for c in cells]


def _no_missing(figures: Figures, where: str, keys: tuple[str, ...] = FIGURE_KEYS) -> None:
    # A classifier's search measures no generation: those figures are for generative tasks
    # (test_generative_search checks them there).
    generative = figures.decode_energy_j_per_token is not None
    empty = [
        k for k in keys if getattr(figures, k) is None and (generative or k not in GENERATION_KEYS)
    ]
    assert not empty, f"{where}: the search wrote no {', '.join(empty)}"


def assert_round_trips(out: Path) -> Results:
    """``results.json`` in ``out`` reads as a :class:`Results` that writes it back exactly,
    with no key the schema does not know; returns the document."""
    text = (out / "results.json").read_text(encoding="utf-8")
    data = json.loads(text)
    doc = Results.from_dict(data)
    assert doc.to_dict() == data
    assert list(doc.to_dict()) == list(data)  # the key order too
    assert results_json_text(doc) == text  # and so the bytes
    extras = {
        "results": doc.extra,
        "meter": doc.meter.extra if doc.meter else {},
        "baseline": doc.baseline.extra,
        "baseline_same_batch": doc.baseline_same_batch.extra if doc.baseline_same_batch else {},
        "best": doc.best.extra if doc.best else {},
        **{f"pareto[{i}]": p.extra for i, p in enumerate(doc.pareto)},
        "confirmation": doc.confirmation.extra if doc.confirmation else {},
        **{
            f"confirmation.candidates.{role}": c.extra
            for role, c in (doc.confirmation.candidates if doc.confirmation else {}).items()
        },
    }
    assert not any(extras.values()), {k: v for k, v in extras.items() if v}
    return doc


def assert_results_published(out: Path, summary: str) -> None:
    """What a confirmed search wrote to ``out`` (and printed as ``summary``): every field the
    report and the summary show is populated from the search's own figures."""
    doc = assert_round_trips(out)
    assert doc.best is not None and doc.confirmation is not None, "a confirmed search"
    # The headline entries: every figure of each, as the report's tables show them.
    _no_missing(doc.baseline.figures, "baseline")
    assert doc.baseline_same_batch is not None
    _no_missing(doc.baseline_same_batch.figures, "baseline_same_batch")
    _no_missing(doc.best.figures, "best")
    for i, entry in enumerate(doc.pareto):
        _no_missing(entry.figures, f"pareto[{i}]")
    for name in (
        "energy_ratio",
        "energy_ratio_same_batch",
        "search_energy_j",
        "search_energy_source",
        "search_energy_uncertainty",
        "grid_intensity_g_per_kwh",
        "grid_intensity_source",
        "price_per_kwh",
        "currency",
        "trials",
        "trials_budget",
    ):
        assert getattr(doc, name) is not None, f"the search wrote no {name}"
    assert doc.meter is not None and doc.meter.source and doc.meter.uncertainty is not None
    g = doc.grid_intensity_g_per_kwh
    assert g is not None
    for role, cand in doc.confirmation.candidates.items():
        _no_missing(cand.figures, f"confirmation.candidates.{role}", MEASURED_KEYS)
        for key in ROUND_KEYS:
            if key in GENERATION_KEYS and cand.figures.decode_energy_j_per_token is None:
                assert key not in cand.round_figures, (role, key)  # a classifier's: not written
                continue
            rounds = cand.round_figures[key]
            assert len(rounds) == doc.confirmation.rounds and None not in rounds, (role, key)
        # One grid intensity in the whole document: the confirmation's CO2e is at it too.
        for j, co2e in zip(
            cand.round_figures["energy_j_per_item"],
            cand.round_figures["co2e_g_per_million_items"],
            strict=True,
        ):
            assert co2e is not None and j is not None
            assert abs(co2e - j * 1e6 / 3.6e6 * g) <= 1e-9 * co2e, (role, co2e, j, g)

    # trials.csv: the columns, in order, and every row a trial row.
    with (out / "trials.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    header = next(csv.reader(io.StringIO((out / "trials.csv").read_text(encoding="utf-8"))))
    assert tuple(header[: len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    fields = {f.name for f in dataclasses.fields(TrialRow)} - {"figures", "extra"}
    assert fields | set(FIGURE_KEYS) <= set(header), sorted(fields - set(header))
    assert len(rows) >= 1 and all(r["state"] for r in rows)

    # The page: no "—" where the search has the value.
    page = (out / "report.html").read_text(encoding="utf-8")
    for opening in (
        '<table class="compare">',
        '<table id="energy-table">',
        '<table id="confirmation-table">',
        '<table id="confirmation-ratios">',
    ):
        cells = _cells(_table(page, opening))
        assert cells and MISSING not in cells, (opening, cells)
    cards = re.findall(r'<div class="v">(.*?)</div>', page)
    assert len(cards) == 4 and not any(MISSING in c for c in cards), cards
    trials_table = _table(page, '<table id="trials-table">')
    for number, row in re.findall(
        r"<tr class='[^']*' data-trial='(\d+)'>(.*?)</tr>", trials_table, re.S
    ):
        if row.count("<td") and "src src-" in row:  # a completed trial, with its energy
            texts = [
                re.sub(r"<[^>]+>", " ", c).strip()
                for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
            ]
            assert MISSING not in texts[4:9], (number, texts)
    assert f"{g:g} g CO2e/kWh" in page
    assert f"{doc.price_per_kwh:g} {doc.currency}/kWh" in page

    # The summary table: every cell of the three columns filled.
    table = summary.split("headline:", 1)[0]
    assert MISSING not in table, table
