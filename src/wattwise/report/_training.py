"""``training.json`` → ``training.html``: one self-contained page (inline CSS and SVG, no
script, no URL), in the style of the search's report.

Pure: it reads the file's dict form. Every value from the user or the study goes through
:func:`_e`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wattwise.report._format import fmt_duration_s, fmt_energy_j
from wattwise.report._render import _CSP, _CSS, _e, _kv_table, _source_badge
from wattwise.report._svg import PlotPoint, scatter_svg

__all__ = ["render_training_html"]


def _energy(value: Any) -> str:
    return fmt_energy_j(value) if isinstance(value, int | float) else "—"


def _seconds(value: Any) -> str:
    return fmt_duration_s(value) if isinstance(value, int | float) else "—"


def _ratio(value: Any) -> str:
    return f"{value:.2f}x" if isinstance(value, int | float) else "—"


def _card(key: str, value: str, sub: str = "") -> str:
    return (
        f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{value}</div>'
        f'<div class="s">{sub}</div></div>'
    )


def _cards(doc: Mapping[str, Any]) -> str:
    default, best = doc.get("default") or {}, doc.get("best") or {}
    rounds = doc.get("rounds") or 0
    how = (
        f"ratio of the means over {rounds} side-by-side rounds, each on its own seed"
        if rounds
        else "single runs"
    )
    return (
        '<div class="cards">'
        + _card(
            "default recipe",
            _energy(default.get("energy_to_target_j")),
            f"{_e(default.get('label', '—'))}; {_seconds(default.get('time_to_target_s'))}, "
            f"{_e(default.get('epochs', '—'))} epoch(s)",
        )
        + _card(
            "best configuration",
            _energy(best.get("energy_to_target_j")),
            f"{_e(best.get('label', '—'))}; {_seconds(best.get('time_to_target_s'))}, "
            f"{_e(best.get('epochs', '—'))} epoch(s)",
        )
        + _card("energy to target, default / best", _ratio(doc.get("energy_ratio")), _e(how))
        + _card("time to target, default / best", _ratio(doc.get("time_ratio")), _e(how))
        + "</div>"
    )


def _plot(doc: Mapping[str, Any]) -> str:
    front = {p["trial"] for p in doc.get("front") or []}
    best_label = (doc.get("best") or {}).get("label")
    estimated = str((doc.get("meter") or {}).get("source", "")).startswith("estimated:")
    unc = (doc.get("meter") or {}).get("uncertainty")
    points = []
    for t in doc.get("trials") or []:
        if t.get("reached"):
            x, y = t.get("energy_to_target_j"), t.get("time_to_target_s")
            kind = "pareto" if t["trial"] in front else "feasible"
        else:
            x, y, kind = t.get("energy_j"), t.get("time_s"), "infeasible"
        if not isinstance(x, int | float) or not isinstance(y, int | float):
            continue
        what = "reached" if t.get("reached") else f"stopped: {t.get('stopped')}"
        points.append(
            PlotPoint(
                float(x),
                float(y),
                kind,
                f"trial {t['trial']}: {t.get('label')}; {what}",
                x_rel_err=unc if isinstance(unc, int | float) else None,
                estimated=estimated,
                trial=int(t["trial"]),
            )
        )
    best = doc.get("best") or {}
    if isinstance(best.get("energy_to_target_j"), int | float) and isinstance(
        best.get("time_to_target_s"), int | float
    ):  # the confirmed medians, drawn over the front's points
        points.append(
            PlotPoint(
                float(best["energy_to_target_j"]),
                float(best["time_to_target_s"]),
                "best",
                f"best, side by side: {best_label}",
                estimated=estimated,
            )
        )
    svg = scatter_svg(
        points,
        svg_id="energy-time",
        title="Energy and time to the target, per configuration",
        x_label="energy to target (J)",
        y_label="time to target (s)",
        x_format=fmt_energy_j,
        y_format=fmt_duration_s,
        x_log=True,
        y_log=True,
    )
    return (
        f"<figure>{svg}<figcaption>Each point is one configuration's run. Runs that did not "
        "reach the target show what they spent before they stopped. The dashed line joins the "
        "front: runs no other run beats on both energy and time."
        + (" Hollow markers: estimated energy." if estimated else "")
        + "</figcaption></figure>"
    )


def _prediction(doc: Mapping[str, Any]) -> str:
    p = doc.get("prediction")
    if not isinstance(p, Mapping):
        return ""
    low, high = (p.get("interval_j") or [None, None])[:2]
    rows = [
        ("planned epochs", _e(p.get("epochs"))),
        (
            "predicted energy (whole run)",
            f"{_energy(p.get('predicted_energy_j'))} [{_energy(low)} – {_energy(high)}]",
        ),
        ("predicted time (whole run)", _seconds(p.get("predicted_time_s"))),
        ("epochs run", _e(p.get("actual_epochs"))),
        ("predicted for the epochs run", _energy(p.get("predicted_energy_at_actual_j"))),
        ("actual energy", _energy(p.get("actual_energy_j"))),
        (
            "energy error",
            f"{p['energy_error']:+.1%}" if isinstance(p.get("energy_error"), float) else "—",
        ),
        (
            "time error",
            f"{p['time_error']:+.1%}" if isinstance(p.get("time_error"), float) else "—",
        ),
        ("warm-up in epoch 1", _energy(p.get("warmup_energy_j"))),
    ]
    notes = "".join(f"<p class='caption'>{_e(n)}</p>" for n in p.get("notes") or [])
    return (
        "<h2>Prediction after the first epoch (the default recipe)</h2>"
        "<p>Made after epoch 1 from its steady per-step rate (its warm-up kept apart), then "
        "checked against the run. See <code>docs/training.md</code>.</p>" + _kv_table(rows) + notes
    )


def _trials(doc: Mapping[str, Any]) -> str:
    head = (
        "<tr><th>trial</th><th>configuration</th><th>reached</th><th class='n'>epochs</th>"
        "<th class='n'>energy to target</th><th class='n'>time to target</th>"
        "<th class='n'>spent</th><th>stopped</th></tr>"
    )
    body = []
    front = {p["trial"] for p in doc.get("front") or []}
    for t in sorted(doc.get("trials") or [], key=lambda r: r["trial"]):
        cls = "pareto" if t["trial"] in front else ("" if t.get("reached") else "infeasible")
        if t.get("state") == "fail":
            cls = "failed"
        body.append(
            f"<tr class='{cls}'><td class='n'>{_e(t['trial'])}</td><td>{_e(t.get('label'))}</td>"
            f"<td>{'yes' if t.get('reached') else 'no'}</td><td class='n'>{_e(t.get('epochs'))}</td>"
            f"<td class='n'>{_energy(t.get('energy_to_target_j'))}</td>"
            f"<td class='n'>{_seconds(t.get('time_to_target_s'))}</td>"
            f"<td class='n'>{_energy(t.get('energy_j'))}</td>"
            f"<td>{_e(t.get('stopped') or t.get('fail_reason') or '')}</td></tr>"
        )
    return (
        "<h2>Every configuration tried</h2><div class='scroll'><table id='trials-table'>"
        f"{head}{''.join(body)}</table></div>"
    )


def render_training_html(doc: Mapping[str, Any], *, version: str = "") -> str:
    """The page of a ``training.json`` (its dict form)."""
    meter = doc.get("meter") or {}
    source = str(meter.get("source", ""))
    title = f"wattwise train: {doc.get('task')} to {doc.get('target_accuracy')}"
    notes: Sequence[str] = doc.get("notes") or []
    body = "".join(
        [
            f"<h1>{_e(title)}</h1>",
            "<p class='meta'>"
            f"<span>study <b>{_e(doc.get('study'))}</b></span>"
            f"<span>energy {_source_badge(source)} "
            f"<span class='unc'>±{float(meter.get('uncertainty') or 0):.0%}</span></span>"
            f"<span>search spent <b>{_energy(doc.get('search_energy_j'))}</b> in "
            f"<b>{_seconds(doc.get('search_time_s'))}</b></span></p>",
            _cards(doc),
            "".join(f"<div class='notice'>{_e(n)}</div>" for n in notes),
            f"<div class='plots'>{_plot(doc)}</div>",
            _prediction(doc),
            _trials(doc),
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}<footer>Generated by wattwise {_e(version)} from training schema "
        f"{_e(doc.get('schema'))}. Machine-readable copy: <code>training.json</code>."
        "</footer></main></body></html>\n"
    )
