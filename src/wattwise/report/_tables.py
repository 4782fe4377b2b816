"""Numbers with units and sources, the machine-readable outputs, and the tables behind the report.

Everything here is pure: plain dicts in, strings / rows / files out. Missing keys and ``None``
(or non-finite) values are normal input, because a failed trial has no energy and a search that
found nothing feasible has no ``best``; they format as :data:`MISSING` instead of raising.
"""

from __future__ import annotations

import csv
import dataclasses
import decimal
import io
import json
import math
import os
import re
import statistics
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wattwise._units import format_energy

__all__ = [
    "MISSING",
    "TRIAL_COLUMNS",
    "AblationRow",
    "ablation",
    "canonical_results",
    "fmt_bytes",
    "fmt_count",
    "fmt_duration_s",
    "fmt_energy_j",
    "fmt_items",
    "fmt_latency_ms",
    "fmt_mass_g",
    "fmt_money",
    "fmt_uncertainty",
    "num",
    "pareto_numbers",
    "payback",
    "redact_url",
    "results_json_text",
    "trials_csv_text",
]

MISSING = "—"
_J_PER_KWH = 3.6e6

# CSV columns in reading order; keys a trial has beyond these are appended, sorted, so nothing
# the search records is silently dropped.
TRIAL_COLUMNS: tuple[str, ...] = (
    "number",
    "state",
    "fail_reason",
    "feasible",
    "pareto",
    "accuracy",
    "accuracy_drop",
    "energy_j_per_item",
    "energy_source",
    "energy_uncertainty",
    "latency_ms_p50",
    "latency_ms_p90",
    "throughput_items_per_s",
    "macs_per_item",
    "params",
    "size_bytes",
    "disturbed_windows",
    "build_energy_j",
    "measure_energy_j",
    "duration_s",
    "student",
    "recipe",
    "deployment",
)

# results.json key order: the schema's reading order first (DESIGN.md), then anything else sorted.
_RESULTS_ORDER = (
    "schema",
    "task",
    "study",
    "storage",
    "scenario",
    "max_accuracy_drop",
    "hardware",
    "meter",
    "baseline",
    "best",
    "pareto",
    "trials",
    "failed_trials",
    "search_energy_j",
    "search_energy_source",
    "payback_items",
    "grid_intensity_g_per_kwh",
    "cost_per_kwh",
)
_FIGURES_ORDER = (
    "number",
    "accuracy",
    "accuracy_drop",
    "energy_j_per_item",
    "energy_source",
    "energy_uncertainty",
    "latency_ms_p50",
    "latency_ms_p90",
    "throughput_items_per_s",
    "macs_per_item",
    "params",
    "size_bytes",
    "disturbed_windows",
    "co2e_g_per_million_items",
    "recipe",
    "student",
    "deployment",
    "artifact",
)
_PASS_ORDER = ("type", "version")
_DEPLOYMENT_ORDER = ("backend", "precision", "batch_size", "threads", "device")

# Query parameters that carry secrets in database URLs (libpq, SQLAlchemy dialects).
_SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "pass", "secret", "token", "sslpassword"})


# ----------------------------------------------------------------------------- values


def num(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` for missing, non-numeric, bool or NaN/inf.

    Bools are refused because ``True`` silently becoming ``1.0`` in a J/item column would be a
    wrong number, not a missing one.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _si(value: float, unit: str, *, digits: int = 3, space: bool = True) -> str:
    """``value`` with an SI prefix from G down to n, ``digits`` significant figures."""
    if value == 0:
        return f"0 {unit}".strip()
    sep = " " if space else ""
    for factor, prefix in (
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
        (1.0, ""),
        (1e-3, "m"),
        (1e-6, "µ"),
        (1e-9, "n"),
    ):
        if abs(value) >= factor * 0.9995 or factor == 1e-9:
            scaled = value / factor
            # .3g would print 1000 as '1e+03' when rounding crosses the next prefix.
            text = f"{scaled:.{digits}g}"
            if "e" in text:
                text = f"{scaled:.0f}"
            return f"{text}{sep}{prefix}{unit}".strip()
    return f"{value:g}{sep}{unit}"


def fmt_energy_j(joules: Any) -> str:
    """Energy with an SI prefix (``0.0021 → '2.1 mJ'``, ``1.5e6 → '1.5 MJ'``).

    Below a kilojoule this is :func:`wattwise._units.format_energy`; above it, it adds the k/M/G
    prefixes that function lacks, because a whole search easily spends megajoules.
    """
    value = num(joules)
    if value is None:
        return MISSING
    if value == 0:
        return "0 J"
    if abs(value) >= 999.5:
        return _si(value, "J")
    return format_energy(value)


def fmt_uncertainty(relative: Any) -> str:
    """A relative uncertainty as ``±5%``; missing stays missing (never shown as ±0%)."""
    value = num(relative)
    if value is None:
        return MISSING
    return f"±{value * 100:.2g}%"


def fmt_latency_ms(ms: Any) -> str:
    """Milliseconds shown in the unit that reads best: ``0.85 → '850 µs'``."""
    value = num(ms)
    return MISSING if value is None else _si(value * 1e-3, "s")


def fmt_duration_s(seconds: Any) -> str:
    """Wall time: seconds below two minutes, then minutes, then hours."""
    value = num(seconds)
    if value is None:
        return MISSING
    if abs(value) < 120:
        return _si(value, "s")
    if abs(value) < 7200:
        return f"{value / 60:.3g} min"
    return f"{value / 3600:.3g} h"


def fmt_bytes(size: Any) -> str:
    """Bytes with decimal SI prefixes (kB = 1000 B), matching what ``ls --si`` prints."""
    value = num(size)
    if value is None:
        return MISSING
    return f"{value:.0f} B" if abs(value) < 1000 else _si(value, "B")


def fmt_count(count: Any, unit: str = "") -> str:
    """A count with an SI prefix: ``1_234_000 → '1.23 M'`` (``unit`` appended)."""
    value = num(count)
    if value is None:
        return MISSING
    if abs(value) < 1000:
        text = f"{value:.3g}" if value != int(value) else f"{int(value)}"
        return f"{text} {unit}".strip()
    return _si(value, unit)


def fmt_items(count: Any) -> str:
    """A number of items in words, for sentences: ``548_000 → '548 thousand items'``."""
    value = num(count)
    if value is None:
        return MISSING
    for factor, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if abs(value) >= factor * 0.9995:
            return f"{value / factor:.3g} {word} items"
    return f"{math.ceil(value):d} items"


def fmt_mass_g(grams: Any) -> str:
    """Mass in grams with an SI prefix (CO2e): ``0.0123 → '12.3 mg'``."""
    value = num(grams)
    return MISSING if value is None else _si(value, "g")


def fmt_money(amount: Any, currency: str = "USD") -> str:
    """An amount with three significant figures and its currency code."""
    value = num(amount)
    if value is None:
        return MISSING
    # Three figures without an exponent: '0.000005 USD' reads, '5e-06 USD' doesn't.
    return f"{decimal.Decimal(f'{value:.3g}'):f} {currency}"


def fmt_accuracy(value: Any) -> str:
    """A metric value: four decimals for the usual [0, 1] metrics, else four figures."""
    v = num(value)
    if v is None:
        return MISSING
    return f"{v:.4f}" if abs(v) <= 1 else f"{v:.4g}"


def fmt_ratio(value: Any) -> str:
    """A multiplicative ratio, ``0.42×``."""
    v = num(value)
    return MISSING if v is None else f"{v:.3g}×"


def per_million(j_per_item: Any, per_kwh: Any) -> float | None:
    """What a million items cost at ``per_kwh`` (grams CO2e or money per kWh)."""
    e, k = num(j_per_item), num(per_kwh)
    return None if e is None or k is None else e * 1e6 / _J_PER_KWH * k


# ----------------------------------------------------------------------------- secrets


def redact_url(url: Any) -> str:
    """``url`` with any password replaced by ``***`` (userinfo and secret query parameters).

    Used for every storage URL the report shows or writes, so a results file can be shared.

    Example:
        >>> redact_url("postgresql://ann:s3cret@db.example:5432/studies")
        'postgresql://ann:***@db.example:5432/studies'
        >>> redact_url("sqlite:///wattwise.db")
        'sqlite:///wattwise.db'
    """
    if url is None:
        return ""
    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        # A URL urllib refuses (e.g. a bad IPv6 host) may still carry 'user:pass@'.
        return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{host}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = "&".join(
                f"{k}=***" if k.lower() in _SECRET_PARAMS else urllib.parse.urlencode({k: v})
                for k, v in pairs
            )
    if netloc == parts.netloc and query == parts.query:
        return text  # untouched: don't let urlunsplit normalise what the user wrote
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# ----------------------------------------------------------------------------- JSON / CSV


def _jsonable(value: Any) -> Any:
    """Plain JSON types only: tuples → lists, paths → str, numpy scalars → Python, NaN → null."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def _ordered(mapping: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """Keys in ``order`` first, then the rest sorted: the same bytes for the same content."""
    out = {k: mapping[k] for k in order if k in mapping}
    out.update({k: mapping[k] for k in sorted(mapping) if k not in out})
    return out


def _canonical_figures(block: Any) -> Any:
    if not isinstance(block, Mapping):
        return block
    out = _ordered(block, _FIGURES_ORDER)
    if isinstance(out.get("recipe"), list):
        out["recipe"] = [
            _ordered(p, _PASS_ORDER) if isinstance(p, Mapping) else p for p in out["recipe"]
        ]
    if isinstance(out.get("deployment"), Mapping):
        out["deployment"] = _ordered(out["deployment"], _DEPLOYMENT_ORDER)
    for key, value in out.items():
        if isinstance(value, Mapping) and key != "deployment":
            out[key] = _deep_sorted(value)
    return out


def _deep_sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_deep_sorted(v) for v in value]
    return value


def canonical_results(results: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready copy of ``results`` in a stable key order, its storage URL redacted.

    The caller's dict is not modified.
    """
    plain = _jsonable(results)
    if "storage" in plain and plain["storage"] is not None:
        plain["storage"] = redact_url(plain["storage"])
    out = _ordered(plain, _RESULTS_ORDER)
    for key in ("baseline", "best"):
        if key in out:
            out[key] = _canonical_figures(out[key])
    for key in ("hardware", "meter"):
        if isinstance(out.get(key), Mapping):
            out[key] = _deep_sorted(out[key])
    if isinstance(out.get("pareto"), list):
        out["pareto"] = [_canonical_figures(p) for p in out["pareto"]]
    return out


def results_json_text(results: Mapping[str, Any]) -> str:
    """``results`` as pretty, key-stable JSON text (trailing newline, UTF-8 kept readable)."""
    return json.dumps(canonical_results(results), indent=2, ensure_ascii=False) + "\n"


# A spreadsheet opening trials.csv runs a cell that starts with one of these as a formula
# (CSV injection: a study name or fail reason "=HYPERLINK(...)" from a shared study).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(text: str) -> str:
    """``text`` for a CSV cell: a would-be formula gets a leading ``'``, which spreadsheets
    take as "this is text" (OWASP's advice). Only strings: a number such as ``-0.5`` is
    written as a number and stays one."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _csv_text(value)
    # Structured cells (recipe, deployment) as compact JSON: one cell, parseable again.
    return json.dumps(_jsonable(value), separators=(",", ":"), ensure_ascii=False)


def _trial_sort_key(row: Mapping[str, Any]) -> tuple[int, float]:
    n = num(row.get("number"))
    return (0, n) if n is not None else (1, 0.0)


def trials_csv_text(trials: Iterable[Mapping[str, Any]]) -> str:
    """One CSV row per trial, sorted by number; recipe and deployment as compact JSON.

    Empty cells mean "not recorded"; booleans are ``true``/``false``.
    """
    rows = sorted((t for t in trials if isinstance(t, Mapping)), key=_trial_sort_key)
    extra = sorted({str(k) for row in rows for k in row} - set(TRIAL_COLUMNS))
    columns = [*TRIAL_COLUMNS, *extra]
    buf = io.StringIO()
    # CRLF, RFC 4180's line end: the writer quotes a cell holding any character of the line
    # terminator, so with "\n" alone a bare CR inside a fail reason was left unquoted and
    # readers split the row there.
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([_csv_text(c) for c in columns])  # extra columns are the trials' keys
    for row in rows:
        flat = dict(row)
        # Known keys first (type before its parameters) so the JSON cells read naturally.
        if isinstance(flat.get("recipe"), list):
            flat["recipe"] = [
                _ordered(p, _PASS_ORDER) if isinstance(p, Mapping) else p for p in flat["recipe"]
            ]
        if isinstance(flat.get("deployment"), Mapping):
            flat["deployment"] = _ordered(flat["deployment"], _DEPLOYMENT_ORDER)
        writer.writerow([_csv_cell(flat.get(c)) for c in columns])
    return buf.getvalue()


# ----------------------------------------------------------------------------- analysis


def pareto_numbers(results: Mapping[str, Any], trials: Iterable[Mapping[str, Any]]) -> set[int]:
    """Trial numbers on the Pareto front: from ``results["pareto"]`` (numbers or rows) and the
    trials' own ``pareto`` flags, so either producer convention works."""
    out: set[int] = set()
    front = results.get("pareto")
    if isinstance(front, list):
        for item in front:
            n = num(item.get("number")) if isinstance(item, Mapping) else num(item)
            if n is not None:
                out.add(int(n))
    for t in trials:
        n = num(t.get("number"))
        if t.get("pareto") is True and n is not None:
            out.add(int(n))
    return out


def payback(results: Mapping[str, Any]) -> dict[str, Any]:
    """The payback arithmetic: what the search spent, what the winner saves per item.

    Returns:
        ``search_j``, ``search_source``, ``saving_j`` (baseline − best J/item, the baseline at
        the winner's batch when ``baseline_same_batch`` is there; None if unknown),
        ``saving_uncertainty`` (relative, propagated from both figures' uncertainties),
        ``items`` (``results["payback_items"]`` when given, else search_j / saving_j, None when
        the winner saves nothing) and ``state``: ``"pays"``, ``"no_best"``, ``"no_saving"``
        ``"unconfirmed"`` (no side-by-side confirmation: no payback published) or ``"unknown"``.
    """
    raw_best, raw_base = results.get("best"), results.get("baseline")
    # The saving is taken against fp32 eager at the winner's batch and threads when the
    # confirmation measured it: the part of the saving that batching alone would give costs no
    # search, so crediting it to the search would flatter the payback.
    if isinstance(results.get("baseline_same_batch"), Mapping):
        raw_base = results["baseline_same_batch"]
    best: Mapping[str, Any] | None = raw_best if isinstance(raw_best, Mapping) else None
    base: Mapping[str, Any] = raw_base if isinstance(raw_base, Mapping) else {}
    search_j = num(results.get("search_energy_j"))
    out: dict[str, Any] = {
        "search_j": search_j,
        "search_source": results.get("search_energy_source"),
        "saving_j": None,
        "saving_uncertainty": None,
        "items": num(results.get("payback_items")),
        "state": "unknown",
    }
    if best is None:
        out["state"] = "no_best"
        return out
    e_base, e_best = num(base.get("energy_j_per_item")), num(best.get("energy_j_per_item"))
    if e_base is None or e_best is None:
        return out
    saving = e_base - e_best
    out["saving_j"] = saving
    u_base, u_best = num(base.get("energy_uncertainty")), num(best.get("energy_uncertainty"))
    if saving != 0 and u_base is not None and u_best is not None:
        # Independent errors add in quadrature; relative to a difference they can be large.
        out["saving_uncertainty"] = math.hypot(u_base * e_base, u_best * e_best) / abs(saving)
    if saving <= 0:
        out["state"] = "no_saving"
        return out
    if "confirmation" in results and not results["confirmation"]:
        # A results file that knows the confirmation stage but has none: its figures were
        # measured minutes apart, and a payback from them is not published.
        out["items"] = None
        out["state"] = "unconfirmed"
        return out
    if out["items"] is None and search_j is not None:
        out["items"] = search_j / saving
    out["state"] = "pays" if out["items"] is not None else "unknown"
    return out


@dataclasses.dataclass(frozen=True)
class AblationRow:
    """One choice's association with energy and accuracy across the completed trials.

    Attributes:
        group: ``pass``, ``student`` or ``deploy:<key>``.
        feature: what a trial has, e.g. ``pass: prune`` or ``backend = onnxruntime``.
        n_with / n_without: completed trials with / without it.
        ratio_with / ratio_without: median J/item ÷ baseline J/item on each side.
        drop_with / drop_without: median accuracy drop on each side.
        effect: ``ratio_with / ratio_without`` (below 1: trials with it used less energy).
    """

    group: str
    feature: str
    n_with: int
    n_without: int
    ratio_with: float | None
    ratio_without: float | None
    drop_with: float | None
    drop_without: float | None
    effect: float | None


def _features(trial: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(group, feature) pairs a trial has: its pass types, its student, its deployment values."""
    feats: list[tuple[str, str]] = []
    recipe = trial.get("recipe")
    if isinstance(recipe, list):
        for p in recipe:
            if isinstance(p, Mapping) and p.get("type") is not None:
                feats.append(("pass", f"pass: {p['type']}"))
    student = trial.get("student")
    feats.append(("student", f"student: {student}" if student else "student: none"))
    dep = trial.get("deployment")
    if isinstance(dep, Mapping):
        for key in _ordered(dep, _DEPLOYMENT_ORDER):
            feats.append((f"deploy:{key}", f"{key} = {dep[key]}"))
    return list(dict.fromkeys(feats))


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ablation(
    trials: Iterable[Mapping[str, Any]], baseline_j_per_item: Any
) -> tuple[list[AblationRow], list[str]]:
    """What each pass / deployment choice went with, from the completed trials.

    For every pass type, student and deployment value present, the median J/item ratio to the
    baseline (and the median accuracy drop) of the trials that have it against those that
    don't. This is observational: trials change several choices at once, so a row shows an
    association, not the effect of the choice alone.

    Returns:
        (rows, constant): rows for choices that vary across trials; ``constant`` lists the
        choices every trial shared (nothing to compare them against).
    """
    base = num(baseline_j_per_item)
    if base is None or base <= 0:
        return [], []
    done = []
    for t in trials:
        e = num(t.get("energy_j_per_item"))
        if t.get("state") == "complete" and e is not None:
            done.append((t, e / base, num(t.get("accuracy_drop")), set(_features(t))))
    if not done:
        return [], []
    all_feats = list(dict.fromkeys(f for _, _, _, fs in done for f in sorted(fs, key=_feat_key)))
    rows: list[AblationRow] = []
    constant: list[str] = []
    for group, feat in sorted(all_feats, key=_feat_key):
        with_ = [(r, d) for _, r, d, fs in done if (group, feat) in fs]
        without = [(r, d) for _, r, d, fs in done if (group, feat) not in fs]
        if not without:
            constant.append(feat)
            continue
        m_with = _median([r for r, _ in with_])
        m_without = _median([r for r, _ in without])
        rows.append(
            AblationRow(
                group=group,
                feature=feat,
                n_with=len(with_),
                n_without=len(without),
                ratio_with=m_with,
                ratio_without=m_without,
                drop_with=_median([d for _, d in with_ if d is not None]),
                drop_without=_median([d for _, d in without if d is not None]),
                effect=(m_with / m_without) if m_with is not None and m_without else None,
            )
        )
    return rows, constant


def _feat_key(item: tuple[str, str]) -> tuple[int, str, str]:
    group, feat = item
    rank = 0 if group == "pass" else 1 if group == "student" else 2
    return (rank, group, feat)
