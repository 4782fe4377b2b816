"""The report's files: what they contain, what they never contain, and how they are written."""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from report_study import (
    BASE_J,
    PASSWORD,
    XSS_RECIPE,
    XSS_STUDENT,
    XSS_STUDY,
    XSS_TASK,
    make_study,
)

from wattwise.errors import InputError
from wattwise.report import (
    ablation,
    canonical_results,
    payback,
    redact_url,
    render_html,
    render_report,
    results_json_text,
    trials_csv_text,
)
from wattwise.report._format import (
    fmt_bytes,
    fmt_energy_j,
    fmt_items,
    fmt_latency_ms,
    fmt_money,
    fmt_uncertainty,
)
from wattwise.results import Results, TrialRow

Study = tuple[dict[str, Any], list[dict[str, Any]]]


def _svg(page: str, svg_id: str) -> str:
    match = re.search(rf'<svg id="{svg_id}".*?</svg>', page, re.S)
    assert match, f"no <svg id={svg_id}>"
    return match.group(0)


def test_writes_the_three_files_and_nothing_else(tmp_path: Path, study: Study) -> None:
    results, trials = study
    paths = render_report(results, trials, tmp_path / "out")
    assert {k: p.name for k, p in paths.items()} == {
        "html": "report.html",
        "json": "results.json",
        "csv": "trials.csv",
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "report.html",
        "results.json",
        "trials.csv",
    ]  # no temp files left behind
    page = paths["html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_inputs_are_not_modified(tmp_path: Path, study: Study) -> None:
    results, trials = study
    before = copy.deepcopy((results, trials))
    render_report(results, trials, tmp_path)
    assert (results, trials) == before


def test_trials_csv_has_one_flat_row_per_trial(tmp_path: Path, study: Study) -> None:
    results, trials = study
    path = render_report(results, list(reversed(trials)), tmp_path)["csv"]
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(trials) == 14
    assert [int(r["number"]) for r in rows] == list(range(14))  # sorted, whatever the input order
    by_number = {int(r["number"]): r for r in rows}
    two = by_number[2]
    assert json.loads(two["recipe"]) == trials[2]["recipe"]
    assert list(json.loads(two["recipe"])[0])[:2] == ["type", "version"]
    assert json.loads(two["deployment"]) == trials[2]["deployment"]
    assert float(two["energy_j_per_item"]) == trials[2]["energy_j_per_item"]
    assert two["energy_source"] == "measured:rapl"
    assert (two["pareto"], two["feasible"]) == ("true", "true")
    assert by_number[10]["state"] == "failed" and "SIGSEGV" in by_number[10]["fail_reason"]
    assert by_number[10]["energy_j_per_item"] == ""  # missing stays empty, not "None"
    assert by_number[9]["deployment"] == "" and by_number[9]["accuracy"] == ""
    # One recipe with a script payload is one cell, quoted, not a broken row.
    assert XSS_RECIPE in by_number[6]["recipe"]


def test_trials_csv_cells_cannot_run_as_spreadsheet_formulas() -> None:
    """A cell a spreadsheet would run (=, +, -, @, tab, CR first) is text with a leading
    quote; numbers, negative ones included, stay numbers."""
    evil = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    trials = [
        {"number": i, "state": "failed", "fail_reason": text, "accuracy_drop": -0.5}
        for i, text in enumerate(evil)
    ]
    for row in trials:
        row["search_delta"] = -3  # a key a newer wattwise writes: kept, in its own column
    trials.append(
        {
            "number": len(evil),
            "state": "failed",
            "=cmd|' /C calc'!A0": "x",
            "fail_reason": "a = b\rc",
        }
    )
    rows = list(csv.DictReader(io.StringIO(trials_csv_text(trials), newline="")))
    assert [r["fail_reason"] for r in rows[: len(evil)]] == ["'" + text for text in evil]
    assert {(r["accuracy_drop"], r["search_delta"]) for r in rows[: len(evil)]} == {("-0.5", "-3")}
    # Only a leading character makes a formula; a CR inside is quoted, not a row break.
    assert len(rows) == len(trials) and rows[-1]["fail_reason"] == "a = b\rc"
    assert rows[-1]["'=cmd|' /C calc'!A0"] == "x"  # the header row too


def test_results_json_round_trips_with_stable_order(tmp_path: Path, study: Study) -> None:
    results, trials = study
    path = render_report(results, trials, tmp_path / "a")["json"]
    loaded = json.loads(path.read_text(encoding="utf-8"))
    expected = copy.deepcopy(results)
    expected["storage"] = redact_url(results["storage"])
    # Everything given comes back as given; the fields this (older) document lacks are
    # written as empty, so every results.json has every field.
    assert {k: v for k, v in loaded.items() if k in expected} == expected
    absent = set(loaded) - set(expected)
    assert absent and all(loaded[k] in (None, []) for k in absent), absent
    assert list(loaded)[:5] == ["schema", "task", "task_spec", "study", "storage"]
    assert path.read_text(encoding="utf-8").startswith('{\n  "schema": 1,')
    # Read back, the file is the same document: it round-trips through Results exactly.
    assert Results.from_dict(loaded).to_dict() == loaded
    assert results_json_text(loaded) == path.read_text(encoding="utf-8")

    # The same content in another key order gives the same bytes.
    shuffled = {k: results[k] for k in reversed(list(results))}
    shuffled["best"] = {k: results["best"][k] for k in reversed(list(results["best"]))}
    other = render_report(shuffled, trials, tmp_path / "b")["json"]
    assert other.read_bytes() == path.read_bytes()


def test_json_output_is_strict_json(tmp_path: Path, study: Study) -> None:
    results, trials = study
    # A figure the search measured as NaN is written as null, never as a bare NaN.
    doc = Results.from_dict(results)
    nan = dataclasses.replace(doc.baseline.figures, latency_ms_p90=float("nan"))
    doc = dataclasses.replace(
        doc,
        baseline=dataclasses.replace(doc.baseline, figures=nan),
        hardware={**(doc.hardware or {}), "extra": (Path("/dev/null"), 3)},
    )
    text = render_report(doc, trials, tmp_path)["json"].read_text(encoding="utf-8")
    assert "NaN" not in text
    loaded = json.loads(text)
    assert loaded["baseline"]["latency_ms_p90"] is None
    assert loaded["hardware"]["extra"] == ["/dev/null", 3]
    # A results dict that says NaN is refused, in one line naming the field.
    results["baseline"]["latency_ms_p90"] = float("nan")
    with pytest.raises(InputError) as info:
        render_report(results, trials, tmp_path / "nan")
    assert str(info.value) == "results: baseline.latency_ms_p90 is nan, not a finite number"
    assert not (tmp_path / "nan").exists()


def test_user_strings_are_escaped_everywhere(tmp_path: Path, study: Study) -> None:
    results, trials = study
    page = render_report(results, trials, tmp_path)["html"].read_text(encoding="utf-8")
    # The page has no script of its own, so any <script tag would be an injection.
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "<b>mobilenetv3</b>_small" not in page
    for raw in (XSS_STUDY, XSS_TASK, XSS_RECIPE, XSS_STUDENT):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;/script&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in page
    assert "&lt;b&gt;mobilenetv3&lt;/b&gt;_small" in page
    title = re.search(r"<title>(.*?)</title>", page, re.S)
    assert title and "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in title.group(1)
    # A caller-given title is escaped too.
    page2 = render_html(results, trials, title="<script>x()</script>")
    assert "<script" not in page2.lower() and "&lt;script&gt;x()" in page2


def test_page_is_self_contained(study: Study) -> None:
    results, trials = study
    page = render_html(results, trials)
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.I)
    tags = re.findall(r"<[^>]*>", page)  # escaped user text has no '<', so these are ours
    assert len(tags) > 100
    for tag in tags:
        assert not re.match(r"<(link|img|iframe|object|embed|script)\b", tag, re.I), tag
        assert not re.search(r"\s(src|href|xlink:href)\s*=", tag, re.I), tag
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page  # CSP: no script, no network, even if escaping failed


def test_password_never_written(tmp_path: Path, study: Study) -> None:
    results, trials = study
    paths = render_report(results, trials, tmp_path)
    for path in paths.values():
        text = path.read_text(encoding="utf-8")
        assert PASSWORD not in text, path.name
    assert "postgresql://wattwise:***@db.internal:5432/studies" in paths["html"].read_text()
    assert json.loads(paths["json"].read_text())["storage"].endswith(
        ":***@db.internal:5432/studies"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p%40ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql+psycopg2://u:pw@h/db?sslmode=require", "postgresql+psycopg2://u:***@h/db?sslmode=require"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db?user=u&password=pw", "postgresql://h/db?user=u&password=***"),
        ("sqlite:///wattwise.db", "sqlite:///wattwise.db"),
        ("mysql://root:a:b:c@h/db", "mysql://root:***@h/db"),
        ("", ""),
    ],
)  # fmt: skip
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_every_energy_figure_carries_its_source(study: Study) -> None:
    results, trials = study
    page = render_html(results, trials)
    table = re.search(r'<table id="trials-table">.*?</table>', page, re.S)
    assert table
    rows = re.findall(r"<tr class='[^']*' data-trial='(\d+)'>(.*?)</tr>", table.group(0), re.S)
    assert len(rows) == len(trials)
    with_energy = {t["number"] for t in trials if t.get("energy_j_per_item") is not None}
    for number, row in rows:
        has_badge = 'class="src src-' in row
        assert has_badge == (int(number) in with_energy), number
    # The estimated trial is labelled as such, in the table and in the plot's tooltip.
    row7 = dict(rows)["7"]
    assert '<span class="src src-estimated">estimated:roofline-cpu</span>' in row7
    assert "hollow: estimated energy" in _svg(page, "plot-pareto")
    # The saving mixes a measurement and an estimate, so it is marked as an estimate.
    assert '<span class="src src-estimated">measured:rapl − estimated:roofline-cpu</span>' in page
    assert "Estimates, not measurements." in page


def test_plot_has_one_marker_per_plottable_trial(study: Study) -> None:
    results, trials = study
    page = render_html(results, trials)
    svg = _svg(page, "plot-pareto")
    plotted = [
        t["number"]
        for t in trials
        if t["state"] == "complete" and t.get("energy_j_per_item") and t.get("accuracy")
    ]
    markers = re.findall(r'<g class="pt pt-(\w+) trial[^"]*" data-trial="(\d+)">', svg)
    assert sorted(int(n) for _, n in markers) == plotted == list(range(9))
    kinds = {int(n): k for k, n in markers}
    assert {n for n, k in kinds.items() if k == "pareto"} == {2, 3, 4, 7}
    assert {n for n, k in kinds.items() if k == "infeasible"} == {5, 6}
    assert svg.count('class="pt pt-baseline ref') == 1
    assert svg.count('class="pt pt-best ref') == 1
    assert "(log scale)" in svg and "accuracy floor" in svg
    assert len(re.findall(r'class="pt [^"]*trial', _svg(page, "plot-latency"))) == 9


def test_failed_trials_are_listed_with_reasons(study: Study) -> None:
    results, trials = study
    page = render_html(results, trials)
    failed = re.search(r'<table id="failed-table">.*?</table>', page, re.S)
    assert failed
    assert "child process died with signal 11 (SIGSEGV)" in failed.group(0)
    assert "pruned at step 1" in failed.group(0)
    assert failed.group(0).count("<tr class=") == 4  # 2 failed, 1 pruned, 1 running


def test_payback_line(study: Study) -> None:
    results, _ = study
    pay = payback(results)
    saving = BASE_J - 1.2e-4
    assert pay["state"] == "pays"
    assert pay["saving_j"] == pytest.approx(saving)
    assert pay["items"] == pytest.approx(1.25e3 / saving)
    line = re.search(r'<p class="payback" id="payback">(.*?)</p>', render_html(results, []), re.S)
    assert line
    text = re.sub(r"<[^>]+>", "", line.group(1))
    assert text.startswith("The search spent 1.25 kJ measured:rapl; the winner saves 2.28 mJ/item")
    assert text.endswith(f"it pays for itself after {fmt_items(1.25e3 / saving)}.")
    assert "548 thousand items" in text

    results["payback_items"] = 1234.0  # the search's own figure wins over ours
    assert payback(results)["items"] == 1234.0

    results["best"]["energy_j_per_item"] = BASE_J * 2
    assert payback(results)["state"] == "no_saving"
    assert "never pays" in render_html(results, [])


def test_nothing_feasible(tmp_path: Path, study: Study) -> None:
    results, trials = study
    results["best"] = None
    results["pareto"] = []
    page = render_report(results, trials, tmp_path)["html"].read_text(encoding="utf-8")
    assert "No trial met the constraints" in page
    assert "nothing pays back" in page
    assert json.loads((tmp_path / "results.json").read_text())["best"] is None


def test_missing_values_render_as_dash(tmp_path: Path) -> None:
    paths = render_report(
        {"schema": 1},
        [{"number": 0, "state": "complete"}, {"number": 1, "state": "failed"}],
        tmp_path,
    )
    page = paths["html"].read_text(encoding="utf-8")
    assert "—" in page and "nothing to plot" in page
    assert "source not recorded" in page
    with paths["csv"].open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2


def test_bad_inputs_raise_before_writing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="results must be a mapping"):
        render_report([], [], tmp_path / "x")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"trials\[1\] must be a mapping"):
        render_report({}, [{"number": 0, "state": "failed"}, 3], tmp_path / "x")  # type: ignore[list-item]
    with pytest.raises(InputError, match=r"^trials\[0\]\.number is missing"):
        render_report({}, [{"state": "failed"}], tmp_path / "x")
    with pytest.raises(InputError, match=r"^results: best\.energy_j_per_item must be a number"):
        render_report({"best": {"energy_j_per_item": "1 mJ"}}, [], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_rewrite_replaces_files_atomically(tmp_path: Path, study: Study) -> None:
    results, trials = study
    render_report(results, trials, tmp_path)
    results["task"] = "second run"
    paths = render_report(results, trials[:3], tmp_path)
    assert "second run" in paths["html"].read_text()
    assert paths["csv"].read_text().count("\n") == 4
    assert len(list(tmp_path.iterdir())) == 3
    # Readable like any file open() creates, not mkstemp's private 0600.
    assert paths["html"].stat().st_mode & 0o044 == 0o044


def test_ablation_is_computed_from_the_rows() -> None:
    dep = {"backend": "eager", "precision": "fp32", "batch_size": 1, "device": "cpu"}
    rows = [
        {"number": 0, "state": "complete", "recipe": [], "deployment": dep,
         "energy_j_per_item": 1.0, "accuracy_drop": 0.0},
        {"number": 1, "state": "complete", "recipe": [{"type": "prune"}], "deployment": dep,
         "energy_j_per_item": 0.5, "accuracy_drop": 0.01},
        {"number": 2, "state": "complete", "recipe": [{"type": "prune"}, {"type": "quantize"}],
         "deployment": {**dep, "precision": "int8"}, "energy_j_per_item": 0.2, "accuracy_drop": 0.02},
        {"number": 3, "state": "failed", "recipe": [{"type": "quantize"}], "deployment": dep},
    ]  # fmt: skip
    table, constant = ablation(rows, 2.0)
    by = {r.feature: r for r in table}
    prune = by["pass: prune"]
    assert (prune.n_with, prune.n_without) == (2, 1)
    assert prune.ratio_with == pytest.approx((0.25 + 0.1) / 2)
    assert prune.ratio_without == pytest.approx(0.5)
    assert prune.effect == pytest.approx(0.35)
    assert prune.drop_with == pytest.approx(0.015)
    assert by["precision = int8"].n_with == 1  # the failed trial is not counted
    assert "backend = eager" in constant and "device = cpu" in constant
    assert ablation(rows, None) == ([], [])


def test_ablation_section_says_it_is_observational(study: Study) -> None:
    results, trials = study
    page = render_html(results, trials)
    section = re.search(r'<section id="ablation">.*?</section>', page, re.S)
    assert section
    assert "Observational" in section.group(0)
    assert "pass: prune" in section.group(0) and "backend = onnxruntime" in section.group(0)
    assert "device = cpu" in section.group(0)  # constant choices are named, not hidden


def test_energy_section_states_grid_and_price(study: Study) -> None:
    results, trials = study
    results["price_per_kwh"] = 0.3
    results["currency"] = "EUR"
    results["cost_per_kwh"] = 99.0  # a key no wattwise ever wrote: the report reads none of it
    page = render_html(results, trials)
    section = re.search(r'<section id="energy">.*?</section>', page, re.S)
    assert section
    text = section.group(0)
    assert "480 g CO2e/kWh" in text and "0.3 EUR/kWh" in text
    # Baseline CO2e: 2.4 mJ × 1e6 items = 2.4 kJ = 0.000667 kWh, × 480 g/kWh = 0.32 g.
    assert ">320 mg<" in text
    assert "whole search" in text and "1.25 kJ" in text


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        (0.0021, fmt_energy_j, "2.1 mJ"),
        (1.5e6, fmt_energy_j, "1.5 MJ"),
        (999.99, fmt_energy_j, "1 kJ"),
        (0.0, fmt_energy_j, "0 J"),
        (None, fmt_energy_j, "—"),
        (float("nan"), fmt_energy_j, "—"),
        (0.85, fmt_latency_ms, "850 µs"),
        (1500.0, fmt_latency_ms, "1.5 s"),
        (480_000, fmt_bytes, "480 kB"),
        (512, fmt_bytes, "512 B"),
        (0.05, fmt_uncertainty, "±5%"),
        (None, fmt_uncertainty, "—"),
        (548_246.0, fmt_items, "548 thousand items"),
        (2.5e6, fmt_items, "2.5 million items"),
        (12.2, fmt_items, "13 items"),
        (5e-06, fmt_money, "0.000005 USD"),
    ],
)
def test_formatting(value: Any, fmt: Any, expected: str) -> None:
    assert fmt(value) == expected


def test_canonical_results_does_not_touch_input(study: Study) -> None:
    results, _ = study
    out = canonical_results(results)
    assert results["storage"].count(PASSWORD) == 1
    assert PASSWORD not in out["storage"]


def test_make_study_is_realistic() -> None:
    results, trials = make_study()
    states = [t["state"] for t in trials]
    assert states.count("failed") == results["failed_trials"] == 2
    assert {t["number"] for t in trials if t.get("pareto")} == {
        p["number"] for p in results["pareto"]
    }
    # Every trial row and the document itself read as the typed schema, nothing left over.
    doc = Results.from_dict(results)
    assert doc.extra == {} and doc.best is not None and doc.best.extra == {}
    assert all(TrialRow.from_dict(t).extra == {} for t in trials)


_ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
_TRIAL_KEYS = ("number", "state", "fail_reason", "recipe", "student", "deployment", "accuracy",
               "accuracy_drop", "energy_j_per_item", "energy_source", "energy_uncertainty",
               "latency_ms_p90", "size_bytes", "build_energy_j", "duration_s", "pareto",
               "feasible")  # fmt: skip
_FIGURE = st.one_of(st.none(), st.floats(-1e3, 1e3), st.integers(-(10**6), 10**6))


@settings(max_examples=60, deadline=None)
@given(
    trials=st.lists(
        st.fixed_dictionaries(
            {"number": st.integers(0, 50), "state": st.sampled_from(["complete", "failed"])},
            optional={
                "energy_j_per_item": _FIGURE,
                "accuracy": st.one_of(st.none(), st.floats(0, 1)),
                "accuracy_drop": _FIGURE,
                "latency_ms_p90": _FIGURE,
                "energy_uncertainty": _FIGURE,
                "energy_source": st.sampled_from(["measured:rapl", "estimated:cpu-ccf"]),
                "recipe": st.lists(st.fixed_dictionaries({"type": st.text(max_size=5)})),
                "deployment": st.dictionaries(st.sampled_from(["backend", "x"]), _ANY),
                "feasible": st.one_of(st.none(), st.booleans()),
                "pareto": st.booleans(),
            },
        ),
        max_size=6,
    ),
    best=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {}, optional={k: _FIGURE for k in ("energy_j_per_item", "accuracy", "latency_ms_p90")}
        ),
    ),
)
def test_any_well_typed_input_renders(trials: list[dict], best: Any) -> None:
    """Odd values of the right types (negatives, zeros, missing figures) degrade to "—"."""
    results, _ = make_study()
    results["best"] = best
    page = render_html(results, trials)
    assert page.count('<svg id="plot-') == 2
    json.loads(results_json_text(results))
    assert trials_csv_text(trials).count("\n") >= len(trials) + 1


@settings(max_examples=80, deadline=None)
@given(
    trials=st.lists(st.fixed_dictionaries({}, optional={k: _ANY for k in _TRIAL_KEYS}), max_size=4),
    best=st.one_of(st.none(), st.dictionaries(st.sampled_from(_TRIAL_KEYS), _ANY, max_size=6)),
    pareto=_ANY,
)
def test_any_shape_of_input_renders_or_is_refused_in_one_line(
    trials: list[dict], best: Any, pareto: Any
) -> None:
    """Strings for numbers, NaN, nesting: the page renders, or one InputError line names the
    field; never another exception."""
    results, _ = make_study()
    results["best"] = best
    results["pareto"] = pareto
    try:
        page = render_html(results, trials)
    except InputError as exc:
        assert "\n" not in str(exc)
        assert re.match(r"(results: [\w.\[\]]+|trials\[\d+\][\w.\[\]]*) ", str(exc)), exc
    else:
        assert page.count('<svg id="plot-') == 2


def test_the_front_is_read_from_results_pareto(study: Study) -> None:
    results, trials = study
    results["pareto"] = [{"number": 3, "accuracy": 0.972}]
    for t in trials:
        t["pareto"] = False
    svg = _svg(render_html(results, trials), "plot-pareto")
    assert re.findall(r'class="pt pt-pareto trial[^"]*" data-trial="(\d+)"', svg) == ["3"]
    # Trial numbers alone are no front: the schema's front holds entries.
    results["pareto"] = [3]
    with pytest.raises(InputError, match=r"^results: pareto\[0\] must be an object"):
        render_html(results, trials)


def test_disturbed_windows_are_flagged_in_the_page_and_the_csv(tmp_path: Path) -> None:
    """A trial measured while other processes loaded the CPU says so wherever it is shown."""
    results, trials = make_study()
    trials[0]["disturbed_windows"] = 2
    paths = render_report(results, trials, tmp_path)
    page = paths["html"].read_text(encoding="utf-8")
    assert "⚠ 2 disturbed window(s)" in page
    rows = list(csv.DictReader(paths["csv"].open(encoding="utf-8")))
    by_number = {r["number"]: r for r in rows}
    assert by_number[str(trials[0]["number"])]["disturbed_windows"] == "2"
    assert page.count("disturbed window(s)") == 1  # the undisturbed trials carry no flag
