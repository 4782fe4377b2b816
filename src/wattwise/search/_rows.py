"""Trials as rows: the :class:`~wattwise.results.TrialRow` that ``trials.csv``, the report,
the progress lines and ``results.json``'s front are made from."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wattwise.results import Figures, TrialRow
from wattwise.search._liveness import INTERRUPTED
from wattwise.search._study import SearchSettings

if TYPE_CHECKING:
    import optuna

__all__ = ["trial_rows"]


def trial_rows(
    trials: Sequence[optuna.trial.FrozenTrial],
    baseline_accuracy: float | None,
    settings: SearchSettings,
) -> list[TrialRow]:
    """One row per trial tried (queued ones are left out), with ``feasible`` and ``pareto``."""
    rows = [row for t in trials if (row := _row(t, baseline_accuracy, settings)) is not None]
    feasible = [r for r in rows if r.feasible]
    on_front = {
        r.number for r in feasible if not any(_dominates(o, r) for o in feasible if o is not r)
    }
    return [dataclasses.replace(r, pareto=True) if r.number in on_front else r for r in rows]


def _row(
    t: optuna.trial.FrozenTrial, baseline_accuracy: float | None, settings: SearchSettings
) -> TrialRow | None:
    from optuna.trial import TrialState

    names = {
        TrialState.COMPLETE: "complete",
        TrialState.FAIL: "failed",
        TrialState.PRUNED: "pruned",
        TrialState.RUNNING: "running",
    }
    if t.state not in names:
        return None  # WAITING: queued, not tried yet
    attrs = t.user_attrs
    figures = Figures.from_dict(attrs.get("figures") or {}, name=f"trial {t.number}'s figures")
    reason = attrs.get("fail_reason")
    if t.state == TrialState.FAIL and reason is None:
        reason = f"{INTERRUPTED}: its worker stopped sending heartbeats"
    accuracy = figures.accuracy
    drop = (
        baseline_accuracy - accuracy
        if accuracy is not None and baseline_accuracy is not None
        else None
    )
    feasible = False
    if t.state == TrialState.COMPLETE and drop is not None:
        p90 = figures.latency_bound_ms
        ok_acc = drop <= settings.max_accuracy_drop + 1e-9
        ok_lat = settings.latency_p90_ms is None or (
            p90 is not None and p90 <= settings.latency_p90_ms
        )
        feasible = bool(ok_acc and ok_lat)
    return TrialRow(
        number=t.number,
        state=names[t.state],
        fail_reason=reason if t.state != TrialState.COMPLETE else None,
        label=attrs.get("label"),
        model=t.params.get("model"),
        recipe=tuple(attrs["recipe"]) if attrs.get("recipe") is not None else None,
        student=attrs.get("student"),
        deployment=attrs.get("deployment"),
        figures=figures,
        accuracy_drop=drop,
        build_energy_j=attrs.get("build_energy_j"),
        measure_energy_j=attrs.get("measure_energy_j"),
        search_energy_source=attrs.get("search_energy_source"),
        duration_s=attrs.get("duration_s"),
        worker=(attrs.get("worker") or {}).get("host"),
        # The trial's output (the user's prints, warnings) and, when it failed, its end.
        log=attrs.get("log"),
        output_tail=attrs.get("output_tail") if t.state == TrialState.FAIL else None,
        feasible=feasible,
        fidelity=attrs.get("fidelity") if t.state == TrialState.COMPLETE else None,
    )


def _objectives(r: TrialRow) -> tuple[float, float, float]:
    """What the front minimises: −accuracy, J/item, p90 latency (a missing one is the worst)."""
    f = r.figures
    acc = f.accuracy if f.accuracy is not None else -math.inf
    energy = f.energy_j_per_item if f.energy_j_per_item is not None else math.inf
    p90 = f.latency_bound_ms
    return (-acc, energy, p90 if p90 is not None else math.inf)


def _dominates(a: TrialRow, b: TrialRow) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere."""
    pa, pb = _objectives(a), _objectives(b)
    return all(x <= y for x, y in zip(pa, pb, strict=True)) and pa != pb
