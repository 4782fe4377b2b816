"""Results → a self-contained HTML report with plots, plus ``results.json`` and ``trials.csv``.

Pure: a :class:`~wattwise.results.Results` and its trial rows in (or their dict forms), files
out; no hardware, no search logic. The page has no script and loads nothing from the network,
so it opens offline, prints, and can be mailed as one file.

The modules answer one question each: ``_format`` (a number with its unit), ``_serialise``
(results.json, trials.csv and reading the inputs), ``_analysis`` (the front, the payback, the
ablation), ``_svg`` (the plots) and ``_render`` (the page).

Example:
    >>> from wattwise.report import render_report
    >>> paths = render_report(results, trials, "wattwise-out")  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['csv', 'html', 'json']
"""

from wattwise.report._analysis import AblationRow, ablation, payback
from wattwise.report._format import fmt_energy_j
from wattwise.report._render import render_html, render_report
from wattwise.report._serialise import (
    canonical_results,
    redact_url,
    results_json_text,
    trials_csv_text,
)
from wattwise.report._svg import PlotPoint, scatter_svg
from wattwise.report._training import render_training_html

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
    "render_training_html",
    "results_json_text",
    "scatter_svg",
    "trials_csv_text",
]
