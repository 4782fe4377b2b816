"""What the report works out from the results: the front, the payback, and the ablation.

Everything here is pure: a :class:`~wattwise.results.Results` and its trial rows in, numbers
out; a figure that was not recorded makes the result unknown, never an exception.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from wattwise.report._format import num
from wattwise.report._serialise import as_results, as_rows
from wattwise.results import Figures, Results, TrialRow

__all__ = ["AblationRow", "ablation", "pareto_numbers", "payback", "per_million"]

_J_PER_KWH = 3.6e6


def per_million(j_per_item: float | None, per_kwh: float | None) -> float | None:
    """What a million items cost at ``per_kwh`` (grams CO2e or money per kWh)."""
    e, k = num(j_per_item), num(per_kwh)
    return None if e is None or k is None else e * 1e6 / _J_PER_KWH * k


def pareto_numbers(results: Results, trials: Iterable[TrialRow]) -> set[int]:
    """Trial numbers on the Pareto front: ``results.pareto``'s and the rows' own flags."""
    out = {p.number for p in results.pareto if p.number is not None}
    return out | {t.number for t in trials if t.pareto}


def payback_reference(results: Results) -> Figures:
    """The figures the winner's saving is taken against: fp32 eager at the winner's batch
    and threads when the confirmation measured it (the part of the saving batching alone
    would give costs no search, so crediting it to the search would flatter the payback),
    else the batch-1 baseline."""
    same = results.baseline_same_batch
    return same.figures if same is not None else results.baseline.figures


def payback(results: Results | Mapping[str, Any]) -> dict[str, Any]:
    """The payback arithmetic: what the search spent, what the winner saves per item.

    Returns:
        ``search_j``, ``search_source``, ``saving_j`` (reference − best J/item, the reference
        being :func:`payback_reference`; None if unknown), ``saving_uncertainty`` (relative,
        propagated from both figures' uncertainties), ``items`` (``results.payback_items``
        when given, else search_j / saving_j, None when the winner saves nothing) and
        ``state``: ``"pays"``, ``"no_best"``, ``"no_saving"``, ``"unconfirmed"`` (no
        side-by-side confirmation: no payback published) or ``"unknown"``.
    """
    results = as_results(results)
    search_j = num(results.search_energy_j)
    out: dict[str, Any] = {
        "search_j": search_j,
        "search_source": results.search_energy_source,
        "saving_j": None,
        "saving_uncertainty": None,
        "items": num(results.payback_items),
        "state": "unknown",
    }
    if results.best is None:
        out["state"] = "no_best"
        return out
    base, best = payback_reference(results), results.best.figures
    e_base, e_best = num(base.energy_j_per_item), num(best.energy_j_per_item)
    if e_base is None or e_best is None:
        return out
    saving = e_base - e_best
    out["saving_j"] = saving
    u_base, u_best = num(base.energy_uncertainty), num(best.energy_uncertainty)
    if saving != 0 and u_base is not None and u_best is not None:
        # Independent errors add in quadrature; relative to a difference they can be large.
        out["saving_uncertainty"] = math.hypot(u_base * e_base, u_best * e_best) / abs(saving)
    if saving <= 0:
        out["state"] = "no_saving"
        return out
    if results.confirmation is None and results.payback_basis is not None:
        # A writer that knows the confirmation stage (it names the payback's basis) but has
        # no confirmation: its figures were measured minutes apart, and no payback from them
        # is published.
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


def _features(trial: TrialRow) -> list[tuple[str, str]]:
    """(group, feature) pairs a trial has: its pass types, its student, its deployment values."""
    feats: list[tuple[str, str]] = []
    for p in trial.recipe or ():
        if p.get("type") is not None:
            feats.append(("pass", f"pass: {p['type']}"))
    student = trial.student
    feats.append(("student", f"student: {student}" if student else "student: none"))
    for key, value in (trial.deployment or {}).items():
        feats.append((f"deploy:{key}", f"{key} = {value}"))
    return list(dict.fromkeys(feats))


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ablation(
    trials: Iterable[TrialRow | Mapping[str, Any]], baseline_j_per_item: float | None
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
    for t in as_rows(trials):
        e = num(t.figures.energy_j_per_item)
        if t.complete and e is not None:
            done.append((t, e / base, num(t.accuracy_drop), set(_features(t))))
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
