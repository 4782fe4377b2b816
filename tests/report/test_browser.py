"""The report in a real headless Chromium: no console errors, plots laid out, printable.

The screenshot and PDF land in ``test-artifacts/`` (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cdp_client import Chromium, find_chromium
from report_study import XSS_STUDY, XSS_TASK, make_study

from wattwise.report import render_report

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = find_chromium()
TESTS = Path(__file__).resolve().parents[1]
# The smallest search: the tiny task's baseline model, eager fp32, batch 1, one thread.
TINY_SPACE = {
    "models": [{"name": "base"}],
    "deployments": ["eager/fp32"],
    "batch_sizes": [1],
    "threads": [1],
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium); `make test` installs it")
    chrome = Chromium(CHROMIUM, width=1280, height=2000)
    try:
        yield chrome
    finally:
        chrome.close()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack("!II", data[16:24])
    return width, height


def test_detector_catches_errors(browser: Chromium) -> None:
    """Guard the guard: a page that throws, logs an error or breaks its CSP is caught."""
    browser.load("data:text/html,<script>console.error('bad'); throw new Error('boom')</script>")
    problems = browser.problems
    assert any("boom" in p for p in problems), problems
    assert any("console.error" in p for p in problems), problems
    browser.load(
        "data:text/html,<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'\">"
        "<script>1</script>"
    )
    assert any("Content Security Policy" in p for p in browser.problems), browser.problems


def test_report_renders_cleanly(browser: Chromium) -> None:
    results, trials = make_study()
    out = ARTIFACTS / "report"
    paths = render_report(results, trials, out)
    browser.load(paths["html"].resolve().as_uri())

    facts = json.loads(
        browser.evaluate(
            """JSON.stringify({
              title: document.title,
              h1: document.querySelector('h1').textContent,
              scripts: document.querySelectorAll('script').length,
              bodyText: document.body.innerText.length,
              plots: [...document.querySelectorAll('svg.plot')].map(s => {
                const b = s.getBoundingClientRect();
                const inside = [...s.querySelectorAll('.pt')].every(p => {
                  const r = p.getBoundingClientRect();
                  return r.width > 0 && r.height > 0 && r.left >= b.left - 1 &&
                         r.right <= b.right + 1 && r.top >= b.top - 1 && r.bottom <= b.bottom + 1;
                });
                return {id: s.id, width: b.width, height: b.height, inside,
                        display: getComputedStyle(s).display,
                        trials: s.querySelectorAll('.pt.trial').length,
                        pareto: s.querySelectorAll('.pt-pareto').length,
                        baseline: s.querySelectorAll('.pt-baseline').length};
              }),
              payback: document.getElementById('payback').innerText,
              rows: document.querySelectorAll('#trials-table tbody tr').length,
            })"""
        )
    )
    assert browser.problems == []

    plots = {p["id"]: p for p in facts["plots"]}
    assert set(plots) == {"plot-pareto", "plot-latency"}
    for plot in plots.values():
        assert plot["width"] > 300 and plot["height"] > 200, plot
        assert plot["display"] != "none" and plot["inside"], plot
        assert plot["trials"] == 9 and plot["pareto"] == 4 and plot["baseline"] == 1, plot
    assert facts["scripts"] == 0
    assert facts["rows"] == len(trials)
    assert "pays for itself after 548 thousand items" in facts["payback"]
    # The payloads show as text: escaped, not executed (a dialog would be a "problem" above).
    assert XSS_TASK in facts["h1"] and XSS_TASK in facts["title"]

    shot = browser.screenshot(ARTIFACTS / "report-screenshot.png")
    width, height = _png_size(shot)
    assert width == 1280 and height > 2000
    assert len(shot) > 50_000  # a blank page compresses to a few kB

    pdf = browser.pdf()
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
    (ARTIFACTS / "report.pdf").write_bytes(pdf)
    assert browser.problems == []


def test_study_name_shows_as_text(browser: Chromium, tmp_path: Path) -> None:
    results, trials = make_study()
    results["task"] = "digits"
    paths = render_report(results, trials, tmp_path)
    browser.load(paths["html"].resolve().as_uri())
    meta = browser.evaluate("document.querySelector('.meta').innerText")
    assert f"study: {XSS_STUDY}" in meta
    assert browser.problems == []


def _wattwise(*args: str, lock_dir: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, finding ``search_tasks`` like the search tests do."""
    paths = [str(TESTS / "search"), str(TESTS.parent / "src"), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "WATTWISE_LOCK_DIR": str(lock_dir),
    }
    env.pop("COLUMNS", None)
    return subprocess.run(
        [sys.executable, "-m", "wattwise", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_script_study_name_through_optimize_and_report(browser: Chromium, tmp_path: Path) -> None:
    """A study named ``<script>alert(1)</script>`` goes through the real ``wattwise optimize``
    (one trial) and ``wattwise report``: both pages show the name as text and run no script,
    and results.json keeps the name as given."""
    (tmp_path / "lock").mkdir()
    space = tmp_path / "space.json"
    space.write_text(json.dumps(TINY_SPACE))
    out, again = tmp_path / "out", tmp_path / "report"
    search = _wattwise(
        *("optimize", "--task", "search_tasks:tiny", "--space", str(space), "--trials", "1"),
        *("--study", XSS_STUDY, "--out", str(out), "--max-time-s", "0.3"),
        lock_dir=tmp_path / "lock",
    )
    assert search.returncode == 0, search.stderr
    report = _wattwise(
        *("report", "--storage", f"sqlite:///{out}/wattwise.db", "--study", XSS_STUDY),
        *("--out", str(again)),
        lock_dir=tmp_path / "lock",
    )
    assert report.returncode == 0, report.stderr
    for folder in (out, again):
        results = json.loads((folder / "results.json").read_text())
        assert results["study"] == XSS_STUDY
        assert results["trials"] == 1
        html = (folder / "report.html").read_text()
        assert XSS_STUDY not in html  # escaped on the way in, whatever the browser does
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        browser.load((folder / "report.html").resolve().as_uri())
        facts = json.loads(
            browser.evaluate(
                """JSON.stringify({
                  scripts: document.querySelectorAll('script').length,
                  meta: document.querySelector('.meta').innerText,
                })"""
            )
        )
        assert browser.problems == []  # an alert would be a "dialog" problem here
        assert facts["scripts"] == 0
        assert f"study: {XSS_STUDY}" in facts["meta"]
