"""Results → one self-contained HTML page (inline CSS and SVG, no script, no URL).

The page is built from small functions that each return escaped HTML text. Every value that
came from the user or the study (task, study, recipe values, reasons, paths, hardware names)
goes through :func:`_e`; a Content-Security-Policy that allows no script and no network load
is the second line of defence if one ever slips through.

It reads a :class:`~wattwise.results.Results` and its :class:`~wattwise.results.TrialRow` list
(or their dict forms), so every figure it shows is one the search writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wattwise._fs import atomic_write_texts, record_outputs
from wattwise.report._analysis import (
    ablation,
    pareto_numbers,
    payback,
    payback_reference,
    per_million,
)
from wattwise.report._format import (
    MISSING,
    fmt_accuracy,
    fmt_bytes,
    fmt_count,
    fmt_duration_s,
    fmt_energy_j,
    fmt_items,
    fmt_latency_ms,
    fmt_mass_g,
    fmt_money,
    fmt_ratio,
    fmt_uncertainty,
    num,
)
from wattwise.report._serialise import (
    as_results,
    as_rows,
    redact_url,
    results_json_text,
    trials_csv_text,
)
from wattwise.report._svg import PlotPoint, scatter_svg
from wattwise.results import Figures, Meter, Results, TrialRow, deployment_dict

__all__ = ["render_html", "render_report"]

# The price the report assumes when a results document records none (optimize's default).
DEFAULT_PRICE_PER_KWH = 0.15

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)

_CSS = """
:root { --ink:#1d1d1f; --muted:#5f6368; --line:#d9d9de; --soft:#f5f6f8; --accent:#D55E00;
  --blue:#0072B2; --ok:#1b7f3b; --warn:#9a5b00; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.45;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 1rem; margin: 18px 0 6px; }
p { margin: 6px 0; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88em;
  overflow-wrap: anywhere; }
.meta { color: var(--muted); margin: 0; display: flex; flex-wrap: wrap; gap: 4px 18px; }
.meta b { color: var(--ink); font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 12px; margin: 18px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: var(--soft); }
.card .k { color: var(--muted); font-size: .82rem; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 1.25rem; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .s { font-size: .85rem; color: var(--muted); }
.notice { border-left: 4px solid var(--warn); background: #fff7e6; padding: 8px 12px; margin: 12px 0; }
.payback { border-left: 4px solid var(--ok); background: #eef8f0; padding: 10px 14px; margin: 12px 0; font-size: 1.02rem; }
.payback.bad { border-left-color: var(--warn); background: #fff7e6; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: .9rem; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 9px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
th.c { text-align: center; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.pareto td:first-child { border-left: 3px solid var(--accent); }
tr.infeasible td { color: #8a8a8a; }
tr.failed td { color: #9b1c1c; }
.scroll { overflow-x: auto; }
#trials-table { font-size: .84rem; }
#trials-table td, #trials-table th { padding: 4px 6px; }
#trials-table td:nth-child(4) { min-width: 9em; }
.src { display: inline-block; font-size: .75rem; padding: 0 6px; border-radius: 9px; white-space: nowrap;
  border: 1px solid currentColor; margin-left: 4px; font-family: ui-monospace, Menlo, Consolas, monospace; }
.src-measured { color: var(--ok); }
.src-estimated { color: var(--warn); background: #fff7e6; }
.src-unknown { color: #9b1c1c; }
.unc { color: var(--muted); font-size: .85em; white-space: nowrap; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: .85rem; max-width: 680px; }
svg.plot { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
svg.plot .pt-pareto circle, svg.plot .pt-baseline path { cursor: help; }
ol.recipe { margin: 4px 0 8px; padding-left: 22px; }
ol.recipe li { margin: 2px 0; }
.caption { color: var(--muted); font-size: .85rem; }
footer { margin-top: 36px; color: var(--muted); font-size: .8rem; border-top: 1px solid var(--line); padding-top: 8px; }
@media print {
  @page { margin: 14mm; }
  body { font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  .scroll { overflow: visible; }
  section, figure, table, .cards, .payback { break-inside: avoid; }
  h2 { break-after: avoid; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  svg.plot { width: 100%; max-width: 17cm; }
  .cards { grid-template-columns: repeat(4, 1fr); }
}
"""

_SOURCES_HELP = (
    "measured:nvml — NVIDIA's NVML energy counter (GPU board); "
    "measured:rapl — Intel/AMD RAPL counters via Linux powercap (CPU package, DRAM); "
    "estimated:&lt;model&gt; — computed by a model from counts and device figures, not measured."
)


def _e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute; ``None`` is the missing mark."""
    return MISSING if value is None else html.escape(str(value), quote=True)


# ----------------------------------------------------------------------------- small pieces


def _source_badge(source: str | None) -> str:
    if not source:
        return '<span class="src src-unknown">source not recorded</span>'
    # A figure derived from an estimate is an estimate, even if a measurement went into it.
    kind = (
        "estimated"
        if "estimated:" in source
        else "measured"
        if source.startswith("measured:")
        else "unknown"
    )
    return f'<span class="src src-{kind}">{_e(source)}</span>'


def _energy_cell(
    j: float | None, source: str | None, uncertainty: float | None, *, badge_below: bool = False
) -> str:
    """A J figure with its uncertainty and source badge: the only way energy is shown."""
    value = fmt_energy_j(j)
    if value == MISSING:
        return MISSING
    unc = fmt_uncertainty(uncertainty)
    unc_html = f' <span class="unc">{_e(unc)}</span>' if unc != MISSING else ""
    return f"{_e(value)}{unc_html}{'<br>' if badge_below else ' '}{_source_badge(source)}"


def _figure_energy(fig: Figures, *, badge_below: bool = False) -> str:
    return _energy_cell(
        fig.energy_j_per_item, fig.energy_source, fig.energy_uncertainty, badge_below=badge_below
    )


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return MISSING
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _pass_params(p: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(str(k), v) for k, v in p.items() if k not in ("type", "version")]


def _recipe_short(recipe: Sequence[Mapping[str, Any]] | None, *, params: int = 2) -> str:
    """``prune(ratio=0.5, scope=global, …) → quantize(…)``: the recipe at a glance (raw text)."""
    if recipe is None:
        return MISSING
    if not recipe:
        return "no passes"
    out = []
    for p in recipe:
        items = _pass_params(p)
        shown = ", ".join(f"{k}={_param_value(v)}" for k, v in items[:params])
        more = ", …" if len(items) > params else ""
        out.append(f"{p.get('type', '?')}({shown}{more})")
    return " → ".join(out)


_DEP_KEYS = ("backend", "precision", "batch_size", "threads", "device")


def _deployment_short(dep: Mapping[str, Any] | None) -> str:
    """``onnxruntime int8 · batch 32 · 2 thr · cpu`` (raw text)."""
    if not dep:
        return MISSING
    bits = [" ".join(str(dep[k]) for k in ("backend", "precision") if dep.get(k) is not None)]
    if dep.get("batch_size") is not None:
        bits.append(f"batch {dep['batch_size']}")
    if dep.get("threads") is not None:
        bits.append(f"{dep['threads']} thr")
    if dep.get("device") is not None:
        bits.append(str(dep["device"]))
    rest = [f"{k}={_param_value(v)}" for k, v in dep.items() if k not in _DEP_KEYS]
    return " · ".join(b for b in bits + rest if b) or MISSING


def _kv_table(rows: Iterable[tuple[str, str]], *, cls: str = "kv") -> str:
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{body}</table>'


def _best_figures(results: Results) -> Figures:
    return results.best.figures if results.best is not None else Figures()


def _diff_source(results: Results) -> str | None:
    """The source of baseline − winner: theirs if they agree, else both, named."""
    s0 = results.baseline.figures.energy_source
    s1 = _best_figures(results).energy_source
    if s0 == s1:
        return s0
    return f"{s0 or 'unrecorded'} − {s1 or 'unrecorded'}"


def _feasible(trial: TrialRow, max_drop: float | None) -> bool | None:
    """The trial's own ``feasible`` flag; without one, its accuracy drop against the limit;
    ``None`` when neither is known."""
    if trial.feasible is not None:
        return trial.feasible
    drop = num(trial.accuracy_drop)
    if drop is None or max_drop is None:
        return None
    return drop <= max_drop


def _disturbed_flag(fig: Figures) -> str:
    n = fig.disturbed_windows
    if not n:
        return ""
    return (
        f' <span class="src src-unknown" title="windows measured while other processes were '
        f'busy: the figure may be inflated">⚠ {int(n)} disturbed</span>'
    )


# ----------------------------------------------------------------------------- sections


def _header(results: Results, trials: Sequence[TrialRow], title: str) -> str:
    n_trials = results.trials if results.trials is not None else len(trials)
    n_failed = results.failed_trials
    if n_failed is None:
        n_failed = sum(t.state == "failed" for t in trials)
    storage = f"<code>{_e(redact_url(results.storage))}</code>" if results.storage else MISSING
    meta = [
        ("task", _e(results.task)),
        ("study", _e(results.study)),
        ("storage", storage),
        ("scenario", _e(results.scenario)),
        ("max accuracy drop", _e(fmt_accuracy(results.max_accuracy_drop))),
        ("trials", _e(f"{n_trials} ({n_failed} failed)")),
    ]
    spans = "".join(f"<span>{k}: <b>{v}</b></span>" for k, v in meta)
    return f'<header><h1>{_e(title)}</h1><p class="meta">{spans}</p></header>'


def _notices(results: Results) -> str:
    out = []
    sources = {"baseline": results.baseline.figures.energy_source}
    if results.best is not None:
        sources["best"] = results.best.figures.energy_source
    estimated = sorted({s for s in sources.values() if s and s.startswith("estimated:")})
    if estimated:
        out.append(
            "<p class='notice'><b>Estimates, not measurements.</b> Energy figures labelled "
            f"{', '.join(f'<code>{_e(s)}</code>' for s in estimated)} were computed by a model, "
            "not read from a meter on this hardware; read them with their stated uncertainty.</p>"
        )
    missing = [k for k, s in sources.items() if not s]
    if missing:
        out.append(
            f"<p class='notice'>No energy source was recorded for {_e(', '.join(missing))}; "
            "those figures cannot be told apart from estimates.</p>"
        )
    distinct = {s for s in sources.values() if s}
    if len(distinct) > 1:
        out.append(
            "<p class='notice'>The baseline and the winner were metered by different sources "
            f"({_e(', '.join(sorted(distinct)))}); their ratio mixes two instruments.</p>"
        )
    return "".join(out)


def _ratio_split(results: Results) -> str:
    """Both confirmed ratios in words, or why there is none."""
    total, same = num(results.energy_ratio), num(results.energy_ratio_same_batch)
    if total is None or same is None or not same:
        return "no ratio published: not confirmed side by side"
    return (
        f"{same:.3g}x less than fp32 eager at the same batch; from batch 1, {total:.3g}x in "
        f"all = {total / same:.3g}x by batching and threads alone × {same:.3g}x by compression "
        "and the runtime"
    )


def _cards(results: Results, pay: Mapping[str, Any]) -> str:
    base, best = results.baseline.figures, _best_figures(results)
    same = results.baseline_same_batch
    has_best = results.best is not None
    ref = payback_reference(results)

    def card(k: str, v: str, s: str) -> str:
        return f'<div class="card"><div class="k">{k}</div><div class="v">{v}</div><div class="s">{s}</div></div>'

    winner_j = fmt_energy_j(best.energy_j_per_item) if has_best else "no winner"
    generative = base.decode_energy_j_per_token is not None
    cards = [
        card(
            ("energy per response" if generative else "energy per item")
            + (" (same batch)" if same is not None else ""),
            _e(f"{fmt_energy_j(ref.energy_j_per_item)} → {winner_j}"),
            _e(_ratio_split(results))
            + " · "
            + _source_badge(ref.energy_source)
            + _disturbed_flag(ref)
            + (
                f" → {_source_badge(best.energy_source)}{_disturbed_flag(best)}" if has_best else ""
            ),
        ),
        card(
            "accuracy",
            _e(
                f"{fmt_accuracy(base.accuracy)} → "
                f"{fmt_accuracy(best.accuracy) if has_best else MISSING}"
            ),
            f"allowed drop {_e(fmt_accuracy(results.max_accuracy_drop))}",
        ),
        *(_generation_cards(results, ref, best, has_best, card) if generative else ()),
        card(
            "time between tokens p90" if generative else "latency p90",
            _e(
                f"{fmt_latency_ms(base.latency_bound_ms)} → "
                f"{fmt_latency_ms(best.latency_bound_ms) if has_best else MISSING}"
            ),
            _e(
                f"time to first token p90 {fmt_latency_ms(best.ttft_ms_p90 if has_best else None)}"
                if generative
                else f"p50 {fmt_latency_ms(best.latency_ms_p50 if has_best else None)}"
            ),
        ),
        card(
            "payback",
            _e(
                fmt_items(pay["items"])
                if pay["state"] == "pays"
                else MISSING
                if pay["state"] in ("unknown", "unconfirmed")
                else "never"
            ),
            _e(f"search spent {fmt_energy_j(pay['search_j'])}"),
        ),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def _generation_cards(
    results: Results, ref: Figures, best: Figures, has_best: bool, card: Any
) -> list[str]:
    """A generative task's two phases, each with its energy per token and its ratio: the
    confirmation's median of within-round ratios, against fp32 eager at the same batch."""
    out = []
    conf = results.confirmation
    for phase, what in (("prefill", "prompt token"), ("decode", "generated token")):
        key = f"{phase}_energy_j_per_token"
        ratio = conf.ratio(f"{phase}_energy_ratio_same_batch") if conf is not None else None
        said = (
            f"{ratio:.3g}x less than fp32 eager at the same batch"
            if ratio is not None and results.energy_ratio_same_batch is not None
            else "no ratio published: not confirmed side by side"
        )
        winner = fmt_energy_j(getattr(best, key)) if has_best else "no winner"
        out.append(
            card(
                f"{phase} energy per {what}",
                _e(f"{fmt_energy_j(getattr(ref, key))} → {winner}"),
                _e(said) + " · " + _source_badge(ref.energy_source),
            )
        )
    return out


def _payback_line(results: Results, pay: Mapping[str, Any]) -> str:
    spent = (
        f"the search spent <b>{_e(fmt_energy_j(pay['search_j']))}</b> "
        f"{_source_badge(pay['search_source'])}"
    )
    if pay["state"] == "no_best":
        text = f"No candidate met the constraints, so nothing pays back what {spent}."
        return f'<p class="payback bad" id="payback">{text[0].upper()}{text[1:]}</p>'
    if pay["state"] == "no_saving":
        return (
            f'<p class="payback bad" id="payback">The search spent '
            f"{_e(fmt_energy_j(pay['search_j']))} {_source_badge(pay['search_source'])}; the "
            "winner uses no less energy per item than the baseline, so the search never pays "
            "for itself in energy.</p>"
        )
    if pay["state"] == "unconfirmed":
        return (
            f'<p class="payback bad" id="payback">The search spent '
            f"{_e(fmt_energy_j(pay['search_j']))} {_source_badge(pay['search_source'])}; its "
            "saving per item was not confirmed side by side, so no payback point is "
            "published.</p>"
        )
    saving = fmt_energy_j(pay["saving_j"])
    unc = fmt_uncertainty(pay["saving_uncertainty"])
    saving_html = (
        f"<b>{_e(saving)}/item</b>"
        + (f' <span class="unc">{_e(unc)}</span>' if unc != MISSING else "")
        + f" {_source_badge(_diff_source(results))}"
    )
    items = (
        f"it pays for itself after <b>{_e(fmt_items(pay['items']))}</b>"
        if pay["state"] == "pays"
        else "the payback point is unknown (the search energy was not recorded)"
    )
    return (
        f'<p class="payback" id="payback">The search spent '
        f"<b>{_e(fmt_energy_j(pay['search_j']))}</b> {_source_badge(pay['search_source'])}; "
        f"the winner saves {saving_html}"
        + (
            " against fp32 eager at its own batch size and threads"
            if results.baseline_same_batch is not None
            else ""
        )
        + f"; {items}.</p>"
    )


def _point_label(t: TrialRow) -> str:
    f = t.figures
    return (
        f"trial {t.number} · {_recipe_short(t.recipe)} · "
        f"{_deployment_short(t.deployment)} · accuracy {fmt_accuracy(f.accuracy)}"
        f" · {fmt_energy_j(f.energy_j_per_item)}/item "
        f"{fmt_uncertainty(f.energy_uncertainty)} ({f.energy_source or 'source not recorded'})"
        f" · p90 {fmt_latency_ms(f.latency_ms_p90)}"
    )


def _estimated(fig: Figures) -> bool:
    return (fig.energy_source or "").startswith("estimated:")


def _energy_plot(points: Sequence[PlotPoint], **kwargs: Any) -> str:
    """A scatter plot with energy per item on its (log) x axis, as both plots have."""
    return scatter_svg(points, x_label="energy per item", x_format=fmt_energy_j, **kwargs)


def _plots(results: Results, trials: Sequence[TrialRow]) -> str:
    front = pareto_numbers(results, trials)
    max_drop = num(results.max_accuracy_drop)
    acc_pts: list[PlotPoint] = []
    lat_pts: list[PlotPoint] = []
    not_plotted = 0
    for t in trials:
        if not t.complete:
            continue
        x = num(t.figures.energy_j_per_item)
        kind = (
            "pareto"
            if t.number in front
            else ("infeasible" if _feasible(t, max_drop) is False else "feasible")
        )
        common = PlotPoint(
            x=0.0,
            y=0.0,
            kind=kind,
            label=_point_label(t),
            x_rel_err=num(t.figures.energy_uncertainty),
            estimated=_estimated(t.figures),
            trial=t.number,
        )
        y_acc, y_lat = num(t.figures.accuracy), num(t.figures.latency_ms_p90)
        if x is None or x <= 0 or y_acc is None:
            not_plotted += 1
        else:
            acc_pts.append(dataclasses.replace(common, x=x, y=y_acc))
        if x is not None and x > 0 and y_lat is not None and y_lat > 0:
            lat_pts.append(dataclasses.replace(common, x=x, y=y_lat))

    references = [("baseline", results.baseline.figures)]
    if results.best is not None:
        references.append(("best", results.best.figures))
    for kind, fig in references:
        x = num(fig.energy_j_per_item)
        if x is None or x <= 0:
            continue
        label = (
            f"{kind} · {fmt_energy_j(x)}/item {fmt_uncertainty(fig.energy_uncertainty)}"
            f" ({fig.energy_source or 'source not recorded'}) · accuracy "
            f"{fmt_accuracy(fig.accuracy)} · p90 {fmt_latency_ms(fig.latency_ms_p90)}"
        )
        ref = PlotPoint(
            x=x,
            y=0.0,
            kind=kind,
            label=label,
            x_rel_err=num(fig.energy_uncertainty) if kind == "baseline" else None,
            estimated=_estimated(fig),
        )
        if (acc := num(fig.accuracy)) is not None:
            acc_pts.append(dataclasses.replace(ref, y=acc))
        if (lat := num(fig.latency_ms_p90)) is not None and lat > 0:
            lat_pts.append(dataclasses.replace(ref, y=lat))

    base_acc = num(results.baseline.figures.accuracy)
    hlines = []
    if base_acc is not None and max_drop is not None:
        hlines.append((base_acc - max_drop, f"accuracy floor: baseline − {fmt_accuracy(max_drop)}"))
    pareto_svg = _energy_plot(
        acc_pts,
        svg_id="plot-pareto",
        title="Accuracy against energy per item, every completed trial",
        y_label="accuracy",
        y_format=fmt_accuracy,
        hlines=hlines,
    )
    lats = [p.y for p in lat_pts]
    latency_svg = _energy_plot(
        lat_pts,
        svg_id="plot-latency",
        title="Latency p90 against energy per item",
        y_label="latency p90 per call",
        y_format=fmt_latency_ms,
        y_log=bool(lats) and max(lats) / min(lats) > 30,
        connect_front=False,
        width=560,
    )
    unfinished = sum(not t.complete for t in trials)
    extra = f"; {not_plotted} completed without accuracy or energy" if not_plotted else ""
    return (
        '<section id="pareto"><h2>Trade-offs</h2><div class="plots">'
        f"<figure>{pareto_svg}<figcaption>Each dot is a completed trial "
        f"({sum(p.kind not in ('baseline', 'best') for p in acc_pts)} plotted{_e(extra)}). Energy is on a log scale; bars show each figure's relative "
        "uncertainty; hollow markers are estimates. Grey trials break a constraint. The Pareto "
        "front is over accuracy, energy and latency, so a front point can look dominated in "
        f"this two-axis view. {unfinished} trials did not complete (listed below).</figcaption>"
        f"</figure><figure>{latency_svg}<figcaption>Latency p90 per call "
        "(one batch of the deployment's batch size) against energy per item.</figcaption>"
        "</figure></div></section>"
    )


def _recipe_full(recipe: Sequence[Mapping[str, Any]] | None) -> str:
    if recipe is None:
        return f"<p>{_e(_recipe_short(recipe))}</p>"
    if not recipe:
        return "<p>No compression passes (the model as given).</p>"
    items = []
    for p in recipe:
        params = ", ".join(
            f"{_e(k)}=<code>{_e(_param_value(v))}</code>" for k, v in _pass_params(p)
        )
        items.append(f"<li><b>{_e(p.get('type', '?'))}</b> {params}</li>")
    return f'<ol class="recipe">{"".join(items)}</ol>'


def _compare_rows(results: Results) -> str:
    same = results.baseline_same_batch
    blocks = [results.baseline.figures]
    if same is not None:
        blocks.append(same.figures)
    if results.best is not None:
        blocks.append(results.best.figures)
    g = results.grid_intensity_g_per_kwh

    def co2(fig: Figures) -> str:
        v = num(fig.co2e_g_per_million_items)
        if v is None:
            v = per_million(fig.energy_j_per_item, g)
        return fmt_mass_g(v)

    def lat(fig: Figures) -> str:
        return _e(f"{fmt_latency_ms(fig.latency_ms_p50)} / {fmt_latency_ms(fig.latency_ms_p90)}")

    rows: list[tuple[str, list[str]]] = [
        ("accuracy", [_e(fmt_accuracy(b.accuracy)) for b in blocks]),
        ("energy per item", [_figure_energy(b) + _disturbed_flag(b) for b in blocks]),
        ("latency p50 / p90", [lat(b) for b in blocks]),
        ("MACs per item", [_e(fmt_count(b.macs_per_item)) for b in blocks]),
        ("parameters", [_e(fmt_count(b.params)) for b in blocks]),
        ("size", [_e(fmt_bytes(b.size_bytes)) for b in blocks]),
        ("CO2e per million items", [_e(co2(b)) for b in blocks]),
    ]
    body = "".join(
        f"<tr><th>{k}</th>{''.join(f'<td class=n>{v}</td>' for v in cells)}</tr>"
        for k, cells in rows
    )
    heads = ["baseline (fp32 eager b1)"]
    if same is not None:
        heads.append(f"fp32 eager, winner's batch ({_deployment_short(same.deployment)})")
    if results.best is not None:
        heads.append("winner")
    head = "".join(f'<th class="n">{_e(h)}</th>' for h in heads)
    return (
        f'<table class="compare"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _winner(results: Results) -> str:
    best = results.best
    if best is None:
        return (
            '<section id="winner"><h2>Winner</h2><p>No trial met the constraints '
            f"(accuracy drop ≤ {_e(fmt_accuracy(results.max_accuracy_drop))}), so "
            "there is no recipe to recommend and no artifact was exported.</p>"
            f"<h3>Baseline</h3>{_compare_rows(results)}</section>"
        )
    dep_rows = [
        (
            _e(k),
            _e("every allowed core" if k == "threads" and v is None else _param_value(v)),
        )
        for k, v in (deployment_dict(best.deployment) or {}).items()
    ] or [("deployment", MISSING)]
    artifact = best.artifact
    return (
        '<section id="winner"><h2>Winner</h2>'
        f"<h3>Recipe</h3>{_recipe_full(best.recipe)}"
        f"<p>Student architecture: <b>{_e(best.student or 'none (the original model)')}</b></p>"
        f"<h3>Deployment</h3>{_kv_table(dep_rows)}"
        f"<h3>Exported artifact</h3><p><code id='artifact'>{_e(artifact) if artifact else MISSING}</code></p>"
        f"<h3>Baseline against winner</h3>{_compare_rows(results)}</section>"
    )


def _energy_section(results: Results, trials: Sequence[TrialRow], pay: Mapping[str, Any]) -> str:
    base = results.baseline.figures
    g = num(results.grid_intensity_g_per_kwh)
    price = num(results.price_per_kwh)
    if price is None:
        price = DEFAULT_PRICE_PER_KWH
    cur = results.currency or "USD"
    per_item: list[tuple[str, Any, Any, Any]] = [
        ("baseline inference", base.energy_j_per_item, base.energy_source, base.energy_uncertainty)
    ]
    if results.best is not None:
        best = results.best.figures
        per_item.append(
            (
                "winner inference",
                best.energy_j_per_item,
                best.energy_source,
                best.energy_uncertainty,
            )
        )
        if pay["saving_j"] is not None:
            per_item.append(
                ("saving", pay["saving_j"], _diff_source(results), pay["saving_uncertainty"])
            )
    rows = []
    for name, j, src, unc in per_item:
        rows.append(
            f"<tr><th>{_e(name)}</th><td class='n'>{_e(fmt_energy_j(j))}</td>"
            f"<td class='n'>{_e(fmt_uncertainty(unc))}</td><td>{_source_badge(src)}</td>"
            f"<td class='n'>{_e(fmt_mass_g(per_million(j, g)))}</td>"
            f"<td class='n'>{_e(fmt_money(per_million(j, price), cur))}</td></tr>"
        )
    per_item_table = (
        '<table id="energy-table"><thead><tr><th>per item</th><th class="n">energy</th>'
        '<th class="n">uncertainty</th><th>source</th><th class="n">CO2e per million items</th>'
        f'<th class="n">cost per million items</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )

    search_rows = [
        (
            "whole search",
            pay["search_j"],
            results.search_energy_source,
            results.search_energy_uncertainty,
        )
    ]
    # The trial rows' build and measure energies are metered by each row's own source.
    row_sources = {t.search_energy_source for t in trials if t.search_energy_source}
    row_source = row_sources.pop() if len(row_sources) == 1 else results.search_energy_source
    for label, values in (
        ("building candidates", [num(t.build_energy_j) for t in trials]),
        ("measuring", [num(t.measure_energy_j) for t in trials]),
    ):
        found = [v for v in values if v is not None]
        if found:
            search_rows.append(
                (f"of which {label} (sum of trial rows)", sum(found), row_source, None)
            )
    srows = []
    for name, j, src, unc in search_rows:
        j_num = num(j)
        kwh = j_num / 3.6e6 if j_num is not None else None
        srows.append(
            f"<tr><th>{_e(name)}</th><td class='n'>{_e(fmt_energy_j(j))}</td>"
            f"<td class='n'>{_e(fmt_uncertainty(unc))}</td><td>{_source_badge(src)}</td>"
            f"<td class='n'>{_e(fmt_mass_g(kwh * g if kwh is not None and g is not None else None))}</td>"
            f"<td class='n'>{_e(fmt_money(kwh * price if kwh is not None else None, cur))}</td></tr>"
        )
    search_table = (
        '<table id="search-energy"><thead><tr><th>search</th><th class="n">energy</th>'
        '<th class="n">uncertainty</th><th>source</th><th class="n">CO2e</th>'
        f'<th class="n">cost</th></tr></thead><tbody>{"".join(srows)}</tbody></table>'
    )
    grid_src = results.grid_intensity_source
    grid_text = (
        f"{_e(f'{g:g}')} g CO2e/kWh" + (f" ({_e(grid_src)})" if grid_src else "")
        if g is not None
        else "not recorded (CO2e not computed)"
    )
    meter = results.meter or Meter()
    return (
        '<section id="energy"><h2>Energy, CO2e and cost</h2>'
        f"<p>Meter: {_source_badge(meter.source)} with a relative uncertainty of "
        f"{_e(fmt_uncertainty(meter.uncertainty))}. Grid intensity: {grid_text}; "
        f"electricity price: {_e(fmt_money(price, cur))}/kWh.</p>"
        f'<div class="scroll">{per_item_table}</div><div class="scroll">{search_table}</div>'
        '<p class="caption">CO2e and cost inherit the energy figure\'s uncertainty; the grid '
        "intensity's and price's own uncertainty is not included. A saving's uncertainty "
        "combines both figures' in quadrature. The saving is against fp32 eager at the "
        "winner's batch size and threads, where the confirmation measured it.</p></section>"
    )


_ROLE_NAMES = {
    "baseline": "baseline: fp32 eager, batch 1",
    "baseline_same_batch": "fp32 eager at the winner's batch and threads",
    "best": "the search's winner",
    "runner_up": "the search's runner-up",
}


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:.0%}"


def _confirmation_section(results: Results) -> str:
    conf = results.confirmation
    if conf is None:
        return (
            '<section id="confirmation"><h2>Confirmation</h2><p>The headline was not measured '
            "side by side (the stage was skipped, interrupted, or failed), so this report "
            "publishes no ratio. Rerun the search, or <code>wattwise report --confirm</code>."
            "</p></section>"
        )
    rounds = conf.rounds or 0
    head = "".join(f'<th class="n">round {i + 1}</th>' for i in range(rounds))
    rows = []
    for role, cand in conf.candidates.items():
        per_round = list(cand.round_figures.get("energy_j_per_item") or ())
        cells = "".join(
            f"<td class='n'>{_e(fmt_energy_j(v))}</td>"
            for v in (per_round + [None] * rounds)[:rounds]
        )
        chosen = " <b>(chosen)</b>" if role == conf.chosen else ""
        fails = "; ".join(cand.failures)
        rows.append(
            f"<tr><th>{_e(_ROLE_NAMES.get(role, role))}{chosen}<br>"
            f"<small>{_e(cand.label)}</small></th>{cells}"
            f"<td class='n'>{_figure_energy(cand.figures)}{_disturbed_flag(cand.figures)}</td>"
            f"<td class='n'>{_e(_percent(num(cand.spread_rel)))}</td>"
            f"<td>{_e(fails) if fails else ''}</td></tr>"
        )
    ratio_rows = []
    for key, name in (
        ("energy_ratio_same_batch", "fp32 eager at the same batch ÷ winner (the headline)"),
        ("energy_ratio", "fp32 eager at batch 1 ÷ winner"),
    ):
        ratio = conf.ratios.get(key)
        per = ", ".join(f"{v:.3g}x" for v in ratio.rounds) if ratio is not None else ""
        med = num(conf.ratio(key))
        ratio_rows.append(
            f"<tr><th>{_e(name)}</th><td>{_e(per or MISSING)}</td>"
            f"<td class='n'><b>{_e(f'{med:.3g}x' if med is not None else MISSING)}</b></td></tr>"
        )
    order = " · ".join(
        "(" + " ".join(x.replace("_", " ") for x in roles) + ")" for roles in conf.order
    )
    return (
        '<section id="confirmation"><h2>Confirmation, side by side</h2>'
        f"<p>After the search, these were measured again in {rounds} rounds whose order rotates "
        f"({_e(order)}), each measurement in its own child process. Figures are medians over "
        "rounds; each ratio is taken within a round and the median of those is published. "
        "Spread is (max − min) ÷ median of a candidate's rounds.</p>"
        '<div class="scroll"><table id="confirmation-table"><thead><tr><th>candidate</th>'
        f'{head}<th class="n">median</th><th class="n">spread</th><th>failed rounds</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table></div>"
        '<table id="confirmation-ratios"><thead><tr><th>ratio</th><th>per round</th>'
        f'<th class="n">median</th></tr></thead><tbody>{"".join(ratio_rows)}</tbody></table>'
        "</section>"
    )


def _ablation_section(results: Results, trials: Sequence[TrialRow]) -> str:
    base = results.baseline.figures
    rows, constant = ablation(trials, base.energy_j_per_item)
    head = (
        '<section id="ablation"><h2>What each choice went with</h2>'
        "<p><b>Observational, not a controlled ablation:</b> for each pass type, student and "
        "deployment choice present, the median J/item (as a ratio to the baseline) and median "
        "accuracy drop of the completed trials that have it, against those that don't. Trials "
        "change several choices at once, so a row shows an association, not what the choice "
        "alone does.</p>"
    )
    if not rows:
        reason = (
            "no baseline energy recorded"
            if num(base.energy_j_per_item) is None
            else "no choice varied across the completed trials"
        )
        return head + f"<p>Nothing to compare: {_e(reason)}.</p></section>"
    body = "".join(
        f"<tr><th>{_e(r.feature)}</th><td class='n'>{r.n_with} / {r.n_without}</td>"
        f"<td class='n'>{_e(fmt_ratio(r.ratio_with))}</td>"
        f"<td class='n'>{_e(fmt_ratio(r.ratio_without))}</td>"
        f"<td class='n'><b>{_e(fmt_ratio(r.effect))}</b></td>"
        f"<td class='n'>{_e(fmt_accuracy(r.drop_with))}</td>"
        f"<td class='n'>{_e(fmt_accuracy(r.drop_without))}</td></tr>"
        for r in rows
    )
    table = (
        '<div class="scroll"><table id="ablation-table"><thead>'
        '<tr><th rowspan="2">choice</th><th class="n" rowspan="2">trials<br>with / without</th>'
        '<th class="c" colspan="3">median J/item ÷ baseline</th>'
        '<th class="c" colspan="2">median accuracy drop</th></tr>'
        '<tr><th class="n">with</th><th class="n">without</th><th class="n">with ÷ without</th>'
        '<th class="n">with</th><th class="n">without</th></tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )
    notes = []
    if constant:
        notes.append(
            f"The same in every completed trial (nothing to compare): {_e(', '.join(constant))}."
        )
    sources = {
        t.figures.energy_source or "unrecorded"
        for t in trials
        if t.complete and num(t.figures.energy_j_per_item) is not None
    } | {base.energy_source or "unrecorded"}
    if len(sources) > 1:
        notes.append(
            "The ratios mix energy sources ("
            + ", ".join(f"<code>{_e(x)}</code>" for x in sorted(sources))
            + "); rows leaning on estimated trials carry those trials' larger uncertainty."
        )
    const = "".join(f"<p class='caption'>{n}</p>" for n in notes)
    return head + table + const + "</section>"


def _failed_section(trials: Sequence[TrialRow]) -> str:
    bad = [t for t in trials if t.state in ("failed", "pruned", "running")]
    if not bad:
        return '<section id="failed"><h2>Trials that did not complete</h2><p>None.</p></section>'
    body = "".join(
        f"<tr class='{_e(t.state)}'><td class='n'>{_e(t.number)}</td>"
        f"<td>{_e(t.state)}</td><td>{_e(_recipe_short(t.recipe))}</td>"
        f"<td>{_e(_deployment_short(t.deployment))}</td>"
        f"<td class='mono'>{_e(t.fail_reason or MISSING)}</td></tr>"
        for t in bad
    )
    return (
        '<section id="failed"><h2>Trials that did not complete</h2><div class="scroll">'
        '<table id="failed-table"><thead><tr><th class="n">#</th><th>state</th><th>recipe</th>'
        f"<th>deployment</th><th>reason</th></tr></thead><tbody>{body}</tbody></table></div></section>"
    )


def _trials_section(results: Results, trials: Sequence[TrialRow]) -> str:
    front = pareto_numbers(results, trials)
    max_drop = num(results.max_accuracy_drop)
    rows = []
    for t in trials:
        feasible = _feasible(t, max_drop)
        if not t.complete:
            status, cls = t.state, "failed" if t.state == "failed" else ""
        elif t.number in front:
            status, cls = "Pareto ★", "pareto"
        elif feasible is None:
            status, cls = "complete", ""
        else:
            status, cls = ("feasible", "") if feasible else ("infeasible", "infeasible")
        build = [num(t.build_energy_j), num(t.measure_energy_j)]
        spent = (
            sum(v for v in build if v is not None) if any(v is not None for v in build) else None
        )
        cost = f"{_e(fmt_energy_j(spent))}<br><span class='unc'>{_e(fmt_duration_s(t.duration_s))}</span>"
        recipe = _e(_recipe_short(t.recipe, params=1)) + (
            f"<br><span class='caption'>student: {_e(t.student)}</span>" if t.student else ""
        )
        energy = _figure_energy(t.figures, badge_below=True)
        fig = t.figures
        if fig.decode_energy_j_per_token is not None:
            energy += (
                f"<br><span class='unc'>prefill {_e(fmt_energy_j(fig.prefill_energy_j_per_token))}"
                f"/token · decode {_e(fmt_energy_j(fig.decode_energy_j_per_token))}/token</span>"
            )
        disturbed = t.figures.disturbed_windows
        if disturbed:
            energy += (
                f"<br><span class='unc' title='other processes used the CPU during "
                f"{int(disturbed)} measured window(s); the figure may be inflated'>"
                f"⚠ {int(disturbed)} disturbed window(s)</span>"
            )
        rows.append(
            f"<tr class='{cls}' data-trial='{_e(t.number)}'>"
            f"<td class='n'>{_e(t.number)}</td><td>{_e(status)}</td>"
            f"<td>{recipe}</td><td>{_e(_deployment_short(t.deployment))}</td>"
            f"<td class='n'>{_e(fmt_accuracy(t.figures.accuracy))}</td>"
            f"<td class='n'>{_e(fmt_accuracy(t.accuracy_drop))}</td>"
            f"<td class='n'>{energy}</td>"
            f"<td class='n'>{_e(fmt_latency_ms(t.figures.latency_bound_ms))}</td>"
            f"<td class='n'>{_e(fmt_bytes(t.figures.size_bytes))}</td>"
            f"<td class='n'>{cost}</td></tr>"
        )
    return (
        '<section id="trials"><h2>All trials</h2><p class="caption">★ on the Pareto front; grey: '
        "breaks a constraint. Recipes show each pass's first parameter; the full recipes and "
        "all figures are in <code>trials.csv</code>.</p>"
        '<div class="scroll"><table id="trials-table"><thead><tr><th class="n">#</th>'
        "<th>status</th><th>recipe</th><th>deployment</th>"
        '<th class="n">accuracy</th><th class="n">drop</th><th class="n">energy per item</th>'
        '<th class="n">latency p90</th><th class="n">size</th>'
        '<th class="n">spent on it<br>(build + measure, time)</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _hardware_value(key: str, value: Any) -> str:
    if value is None:
        return MISSING
    if key.endswith("_bytes"):
        return fmt_bytes(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    if isinstance(value, Mapping):
        return _param_value(value)
    return str(value)


def _machine_section(results: Results) -> str:
    hw = results.hardware or {}
    meter = results.meter or Meter()
    hw_rows = [(_e(k), _e(_hardware_value(str(k), v))) for k, v in hw.items()]
    meter_rows = [
        ("source", _source_badge(meter.source)),
        ("uncertainty", _e(fmt_uncertainty(meter.uncertainty))),
    ] + [(_e(k), _e(_hardware_value(k, v))) for k, v in meter.extra.items()]
    return (
        '<section id="machine"><h2>Hardware and meter</h2><div class="plots">'
        f"<div><h3>Hardware</h3>{_kv_table(hw_rows or [('hardware', MISSING)])}</div>"
        f"<div><h3>Meter</h3>{_kv_table(meter_rows)}</div></div>"
        f'<p class="caption">Energy sources: {_SOURCES_HELP}</p></section>'
    )


# ----------------------------------------------------------------------------- entry points


def render_html(
    results: Results | Mapping[str, Any],
    trials: Iterable[TrialRow | Mapping[str, Any]],
    *,
    title: str | None = None,
) -> str:
    """The report page as one HTML string (no file written).

    Args:
        results: the results document (a :class:`Results`, or results.json's dict); a
            figure not recorded renders as "—".
        trials: one row per trial, as for :func:`render_report`.
        title: the page heading; default ``"wattwise report: <task>"``.

    Raises:
        InputError: ``results`` is not a results document or ``trials`` not a list of trial
            rows (one line naming the field that is wrong).
    """
    doc, rows = as_results(results), as_rows(trials)
    heading = title if title is not None else f"wattwise report: {doc.task or MISSING}"
    pay = payback(doc)
    import wattwise

    version = getattr(wattwise, "__version__", "")
    body = "".join(
        [
            _header(doc, rows, heading),
            _notices(doc),
            _cards(doc, pay),
            _payback_line(doc, pay),
            _plots(doc, rows),
            _winner(doc),
            _confirmation_section(doc),
            _energy_section(doc, rows, pay),
            _ablation_section(doc, rows),
            _failed_section(rows),
            _trials_section(doc, rows),
            _machine_section(doc),
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="wattwise {_e(version)}">'
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}<footer>Generated by wattwise {_e(version)} from results schema "
        f"{_e(doc.schema)}. Machine-readable copies: <code>results.json</code>, "
        "<code>trials.csv</code>.</footer></main></body></html>\n"
    )


def render_report(
    results: Results | Mapping[str, Any],
    trials: Iterable[TrialRow | Mapping[str, Any]],
    out_dir: Path | str,
    *,
    title: str | None = None,
) -> dict[str, Path]:
    """Write ``report.html``, ``results.json`` and ``trials.csv`` into ``out_dir``.

    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    The storage URL's password is replaced by ``***`` in every output.

    Args:
        results: the results document (a :class:`~wattwise.results.Results`, or the dict of
            a results.json, schema 1).
        trials: one :class:`~wattwise.results.TrialRow` (or its dict) per trial.
        out_dir: created if absent.
        title: the page heading; default ``"wattwise report: <task>"``.

    Returns:
        ``{"html": ..., "json": ..., "csv": ...}``: the paths written.

    Raises:
        InputError: the inputs are not a results document and a list of trial rows.

    Example:
        >>> paths = render_report(results, trials, Path("wattwise-out"))  # doctest: +SKIP
        >>> paths["html"].name  # doctest: +SKIP
        'report.html'
    """
    doc, rows = as_results(results), as_rows(trials)
    page = render_html(doc, rows, title=title)  # render first: no files if it raises
    out = Path(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # All three or none: a failed write (full disk, ulimit -f) leaves the previous set whole.
    files = {
        "json": (out / "results.json", results_json_text(doc)),
        "csv": (out / "trials.csv", trials_csv_text(rows)),
        "html": (out / "report.html", page),
    }
    try:
        # In a wattwise output directory the marker owns these names before they exist.
        record_outputs(out, [path.name for path, _ in files.values()])
        atomic_write_texts(dict(files.values()))
    except BaseException:
        if created:  # a folder we made for a report that was never written
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    return {key: path for key, (path, _) in files.items()}
