"""Trials as plain rows: the schema ``results.json``, ``trials.csv`` and the report read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from wattwise.search._liveness import INTERRUPTED
from wattwise.search._study import FIGURES, SearchSettings

if TYPE_CHECKING:
    import optuna

__all__ = ["trial_rows"]


def trial_rows(
    trials: Sequence[optuna.trial.FrozenTrial],
    baseline_accuracy: float | None,
    settings: SearchSettings,
) -> list[dict[str, Any]]:
    """One plain dict per trial (the report's row schema), with ``feasible`` and ``pareto``."""
    from optuna.trial import TrialState

    names = {
        TrialState.COMPLETE: "complete",
        TrialState.FAIL: "failed",
        TrialState.PRUNED: "pruned",
        TrialState.RUNNING: "running",
    }
    rows = []
    for t in trials:
        if t.state not in names:
            continue  # WAITING: queued, not tried yet
        attrs = t.user_attrs
        figures = attrs.get("figures") or {}
        accuracy = figures.get("accuracy")
        reason = attrs.get("fail_reason")
        if t.state == TrialState.FAIL and reason is None:
            reason = f"{INTERRUPTED}: its worker stopped sending heartbeats"
        row: dict[str, Any] = {
            "number": t.number,
            "state": names[t.state],
            "fail_reason": reason if t.state != TrialState.COMPLETE else None,
            "label": attrs.get("label"),
            "model": t.params.get("model"),
            "recipe": attrs.get("recipe"),
            "student": attrs.get("student"),
            "deployment": attrs.get("deployment"),
            "accuracy": accuracy,
            "accuracy_drop": (
                baseline_accuracy - accuracy
                if accuracy is not None and baseline_accuracy is not None
                else None
            ),
            **{k: figures.get(k) for k in FIGURES if k != "accuracy"},
            "build_energy_j": attrs.get("build_energy_j"),
            "measure_energy_j": attrs.get("measure_energy_j"),
            "search_energy_source": attrs.get("search_energy_source"),
            "duration_s": attrs.get("duration_s"),
            "worker": (attrs.get("worker") or {}).get("host"),
            # The trial's output (the user's prints, warnings) and, when it failed, its end.
            "log": attrs.get("log"),
            "output_tail": attrs.get("output_tail") if t.state == TrialState.FAIL else None,
            "feasible": False,
            "pareto": False,
        }
        if t.state == TrialState.COMPLETE and row["accuracy_drop"] is not None:
            ok_acc = row["accuracy_drop"] <= settings.max_accuracy_drop + 1e-9
            ok_lat = settings.latency_p90_ms is None or (
                row["latency_ms_p90"] is not None
                and row["latency_ms_p90"] <= settings.latency_p90_ms
            )
            row["feasible"] = bool(ok_acc and ok_lat)
        rows.append(row)
    feasible = [r for r in rows if r["feasible"]]
    for r in feasible:
        r["pareto"] = not any(_dominates(o, r) for o in feasible if o is not r)
    return rows


def _dominates(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere."""
    pa = (-a["accuracy"], a["energy_j_per_item"], a["latency_ms_p90"])
    pb = (-b["accuracy"], b["energy_j_per_item"], b["latency_ms_p90"])
    return all(x <= y for x, y in zip(pa, pb, strict=True)) and pa != pb
