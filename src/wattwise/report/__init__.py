"""Results → a self-contained HTML report with plots, plus ``results.json`` and ``trials.csv``.

Pure: plain dicts in, files out; no hardware, no search logic. The page has no script and
loads nothing from the network, so it opens offline, prints, and can be mailed as one file.

Example:
    >>> from wattwise.report import render_report
    >>> paths = render_report(results, trials, "wattwise-out")  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['csv', 'html', 'json']
"""

from wattwise.report._render import render_html, render_report
from wattwise.report._svg import PlotPoint, scatter_svg
from wattwise.report._tables import (
    AblationRow,
    ablation,
    canonical_results,
    fmt_energy_j,
    payback,
    redact_url,
    results_json_text,
    trials_csv_text,
)

__all__ = [
    "AblationRow",
    "PlotPoint",
    "ablation",
    "canonical_results",
    "fmt_energy_j",
    "payback",
    "redact_url",
    "render_html",
    "render_report",
    "results_json_text",
    "scatter_svg",
    "trials_csv_text",
]
