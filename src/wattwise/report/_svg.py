"""Scatter plots as inline SVG text: no plotting library, no script, nothing fetched.

The report must open offline and print, and matplotlib is not a dependency; a scatter plot
with log axes, error bars, a legend and tooltips (SVG ``<title>``) is a page of code.
Every string placed in the SVG is escaped here, so callers pass raw text.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable, Sequence

__all__ = ["KINDS", "PlotPoint", "scatter_svg"]

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies and in greyscale
# print, helped by the marker sizes and shapes differing too.
KINDS: dict[str, tuple[str, str]] = {
    # kind: (colour, legend text)
    "infeasible": ("#9a9a9a", "infeasible (breaks a constraint)"),
    "feasible": ("#0072B2", "feasible trial"),
    "pareto": ("#D55E00", "Pareto front"),
    "baseline": ("#000000", "baseline"),
    "best": ("#D55E00", "winner"),
}
_DRAW_ORDER = ("infeasible", "feasible", "pareto")


@dataclasses.dataclass(frozen=True)
class PlotPoint:
    """One marker.

    Attributes:
        x, y: data coordinates (must be > 0 on a log axis; others are dropped).
        kind: a key of :data:`KINDS`.
        label: tooltip text (raw; escaped when drawn).
        x_rel_err: relative uncertainty of ``x``, drawn as a horizontal error bar.
        estimated: drawn hollow, so an estimate never looks like a measurement.
        trial: the trial number, written as ``data-trial`` for tests and readers of the SVG.
    """

    x: float
    y: float
    kind: str
    label: str
    x_rel_err: float | None = None
    estimated: bool = False
    trial: int | None = None


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _f(v: float) -> str:
    return f"{v:.1f}"


class _Axis:
    """Maps data to pixels, linearly or in log10, and proposes readable ticks."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, *, log: bool) -> None:
        self.log = log
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
            if hi - lo < 1e-9:
                lo, hi = lo - 0.3, hi + 0.3  # one point: show a factor of two either side
            pad = (hi - lo) * 0.06
        else:
            if hi - lo < 1e-12:
                half = max(abs(lo) * 0.05, 1e-3)
                lo, hi = lo - half, hi + half
            pad = (hi - lo) * 0.08
        self.lo, self.hi = lo - pad, hi + pad
        self.p0, self.p1 = p0, p1

    def __call__(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        return self.p0 + (t - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    @property
    def data_lo(self) -> float:
        return 10**self.lo if self.log else self.lo

    def ticks(self) -> list[float]:
        if self.log:
            decades = range(math.floor(self.lo), math.ceil(self.hi) + 1)
            span = self.hi - self.lo
            mults = (1.0, 2.0, 5.0) if span < 2.5 else (1.0,)
            step = max(1, math.ceil(span / 7)) if span >= 2.5 else 1
            out = [m * 10.0**d for d in decades if d % step == 0 for m in mults]
            if span < 0.6:  # under a factor of four: add 1.5, 3, 7 too, or there is one tick
                out += [m * 10.0**d for d in decades for m in (1.5, 3.0, 4.0, 7.0)]
            return sorted(v for v in out if self.lo <= math.log10(v) <= self.hi)
        span = self.hi - self.lo
        raw = span / 5
        mag = 10 ** math.floor(math.log10(raw))
        step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
        first = math.ceil(self.lo / step) * step
        n = int((self.hi - first) / step + 1e-9) + 1
        return [first + i * step for i in range(max(n, 0))]


def _marker(kind: str, cx: float, cy: float, *, hollow: bool) -> str:
    colour = KINDS[kind][0]
    fill = "#ffffff" if hollow else colour
    if kind == "baseline":
        r = 7.0
        return (
            f'<path d="M{_f(cx)} {_f(cy - r)}L{_f(cx + r)} {_f(cy)}L{_f(cx)} {_f(cy + r)}'
            f'L{_f(cx - r)} {_f(cy)}Z" fill="{fill}" stroke="{colour}" stroke-width="1.5"/>'
        )
    if kind == "best":
        return (
            f'<circle cx="{_f(cx)}" cy="{_f(cy)}" r="11" fill="none" stroke="{colour}" '
            'stroke-width="2.5"/>'
        )
    r = {"pareto": 6.0, "feasible": 4.5, "infeasible": 4.0}[kind]
    stroke = "#333333" if kind == "pareto" else colour
    return (
        f'<circle cx="{_f(cx)}" cy="{_f(cy)}" r="{r}" fill="{fill}" stroke="{stroke}" '
        'stroke-width="1.2"/>'
    )


def scatter_svg(
    points: Sequence[PlotPoint],
    *,
    svg_id: str,
    title: str,
    x_label: str,
    y_label: str,
    x_format: Callable[[float], str],
    y_format: Callable[[float], str],
    x_log: bool = True,
    y_log: bool = False,
    connect_front: bool = True,
    hlines: Sequence[tuple[float, str]] = (),
    width: int = 680,
    height: int = 430,
) -> str:
    """Draw ``points`` as an SVG scatter plot and return the ``<svg>`` element's text.

    Points that cannot be placed (non-finite, or ≤ 0 on a log axis) are left out; the caller
    says so in the text around the plot. Pareto points are joined, in x order, by a dashed line
    when ``connect_front``. ``hlines`` are labelled horizontal reference lines (e.g. the
    accuracy floor).

    Example:
        >>> svg = scatter_svg([PlotPoint(1e-3, 0.9, "feasible", "trial 0")], svg_id="p",
        ...                   title="t", x_label="J/item", y_label="accuracy",
        ...                   x_format=str, y_format=str)
        >>> svg.startswith("<svg") and 'data-trial' not in svg
        True
    """

    def placeable(p: PlotPoint) -> bool:
        ok = math.isfinite(p.x) and math.isfinite(p.y) and p.kind in KINDS
        return ok and (p.x > 0 or not x_log) and (p.y > 0 or not y_log)

    pts = [p for p in points if placeable(p)]
    ml, mr, mt, mb = 78.0, 24.0, 56.0, 52.0
    left, right, top, bottom = ml, width - mr, mt, height - mb
    head = (
        f'<svg id="{_e(svg_id)}" class="plot" role="img" aria-labelledby="{_e(svg_id)}-t" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        f'<title id="{_e(svg_id)}-t">{_e(title)}</title>'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>'
    )
    if not pts:
        return (
            head + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
            'font-size="14" fill="#555555">nothing to plot: no completed trial has these '
            "figures</text></svg>"
        )

    xs_lo, xs_hi = [], []
    for p in pts:
        err = p.x_rel_err if p.x_rel_err is not None and p.x_rel_err > 0 else 0.0
        xs_hi.append(p.x * (1 + err))
        lo = p.x * (1 - err)
        xs_lo.append(lo if lo > 0 or not x_log else p.x)
    ys = [p.y for p in pts] + [y for y, _ in hlines if math.isfinite(y) and (y > 0 or not y_log)]
    ax = _Axis(min(xs_lo), max(xs_hi), left, right, log=x_log)
    ay = _Axis(min(ys), max(ys), bottom, top, log=y_log)

    parts = [head]
    # Grid and tick labels.
    parts.append('<g class="grid" stroke="#e3e3e3" stroke-width="1">')
    for t in ax.ticks():
        parts.append(f'<line x1="{_f(ax(t))}" y1="{top}" x2="{_f(ax(t))}" y2="{bottom}"/>')
    for t in ay.ticks():
        parts.append(f'<line x1="{left}" y1="{_f(ay(t))}" x2="{right}" y2="{_f(ay(t))}"/>')
    parts.append("</g>")
    parts.append('<g class="ticks" font-size="11" fill="#444444">')
    for t in ax.ticks():
        parts.append(
            f'<text x="{_f(ax(t))}" y="{bottom + 16}" text-anchor="middle">{_e(x_format(t))}</text>'
        )
    for t in ay.ticks():
        parts.append(
            f'<text x="{left - 6}" y="{_f(ay(t) + 4)}" text-anchor="end">{_e(y_format(t))}</text>'
        )
    parts.append("</g>")
    parts.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        'fill="none" stroke="#888888"/>'
    )
    log_note = lambda log: " (log scale)" if log else ""  # noqa: E731
    parts.append(
        f'<text x="{_f((left + right) / 2)}" y="{height - 12}" text-anchor="middle" '
        f'font-size="12.5">{_e(x_label + log_note(x_log))}</text>'
        f'<text transform="translate(16 {_f((top + bottom) / 2)}) rotate(-90)" '
        f'text-anchor="middle" font-size="12.5">{_e(y_label + log_note(y_log))}</text>'
    )

    for y, label in hlines:
        if not (math.isfinite(y) and (y > 0 or not y_log)):
            continue
        py = ay(y)
        parts.append(
            f'<g class="hline"><line x1="{left}" y1="{_f(py)}" x2="{right}" y2="{_f(py)}" '
            'stroke="#6a3d9a" stroke-dasharray="6 4" stroke-width="1.2"/>'
            f'<text x="{right - 4}" y="{_f(py - 5)}" text-anchor="end" font-size="11" '
            f'fill="#6a3d9a">{_e(label)}</text></g>'
        )

    front = sorted((p for p in pts if p.kind == "pareto"), key=lambda p: p.x)
    if connect_front and len(front) > 1:
        path = " ".join(f"{_f(ax(p.x))},{_f(ay(p.y))}" for p in front)
        parts.append(
            f'<polyline class="front" points="{path}" fill="none" stroke="{KINDS["pareto"][0]}" '
            'stroke-width="1.5" stroke-dasharray="4 3" opacity="0.8"/>'
        )

    def error_bar(p: PlotPoint) -> str:
        if p.x_rel_err is None or p.x_rel_err <= 0:
            return ""
        lo = p.x * (1 - p.x_rel_err)
        x0 = ax(lo) if lo > 0 or not x_log else left
        x1, py = ax(p.x * (1 + p.x_rel_err)), ay(p.y)
        colour = KINDS[p.kind][0]
        return (
            f'<path d="M{_f(x0)} {_f(py)}H{_f(x1)}M{_f(x0)} {_f(py - 3)}V{_f(py + 3)}'
            f'M{_f(x1)} {_f(py - 3)}V{_f(py + 3)}" stroke="{colour}" stroke-width="1" '
            'opacity="0.55" fill="none"/>'
        )

    ordered = sorted(
        pts, key=lambda p: _DRAW_ORDER.index(p.kind) if p.kind in _DRAW_ORDER else len(KINDS)
    )
    parts.append('<g class="points">')
    for p in ordered:
        cx, cy = ax(p.x), ay(p.y)
        is_trial = p.kind in _DRAW_ORDER
        classes = f"pt pt-{p.kind}" + (" trial" if is_trial else " ref")
        classes += " estimated" if p.estimated else ""
        data = f' data-trial="{int(p.trial)}"' if p.trial is not None else ""
        text = ""
        if not is_trial:
            name = KINDS[p.kind][1]
            # Near the right edge the label goes to the left of the marker, inside the frame.
            flip = cx + 13 + 6.5 * len(name) > right
            tx, anchor = (cx - 13, "end") if flip else (cx + 13, "start")
            text = (
                f'<text x="{_f(tx)}" y="{_f(cy - 9)}" font-size="11" text-anchor="{anchor}" '
                f'fill="{KINDS[p.kind][0]}">{_e(name)}</text>'
            )
        parts.append(
            f'<g class="{classes}"{data}><title>{_e(p.label)}</title>'
            f"{error_bar(p) if is_trial or p.kind == 'baseline' else ''}"
            f"{_marker(p.kind, cx, cy, hollow=p.estimated)}{text}</g>"
        )
    parts.append("</g>")
    parts.append(_legend(pts, width))
    parts.append("</svg>")
    return "".join(parts)


def _legend(pts: Sequence[PlotPoint], width: int) -> str:
    present = [k for k in KINDS if any(p.kind == k for p in pts)]
    # The winner's ring is drawn large to circle a point; in the legend it is scaled down.
    items: list[tuple[str, str]] = [
        (
            _marker(k, 0, 0, hollow=False)
            if k != "best"
            else f'<g transform="scale(0.6)">{_marker(k, 0, 0, hollow=False)}</g>',
            KINDS[k][1],
        )
        for k in present
    ]
    if any(p.estimated for p in pts):
        items.append((_marker("feasible", 0, 0, hollow=True), "hollow: estimated energy"))
    if any(p.x_rel_err for p in pts):
        items.append(
            (
                '<path d="M-8 0H8M-8 -3V3M8 -3V3" stroke="#555555" fill="none"/>',
                "bar: energy uncertainty",
            )
        )
    out = ['<g class="legend" font-size="11.5">']
    x, y = 20.0, 22.0
    for mark, label in items:
        est = 26 + 6.3 * len(label)
        if x + est > width - 10:
            x, y = 20.0, y + 20
        out.append(
            f'<g transform="translate({_f(x)} {_f(y)})">{mark}'
            f'<text x="14" y="4">{_e(label)}</text></g>'
        )
        x += est
    out.append("</g>")
    return "".join(out)
