"""The confirmation stage: the headline figures, measured side by side at the end of a search.

A search measures each candidate once, in its own trial, minutes apart from the baseline it is
compared with: on a shared machine that ratio swings with whatever else ran in between (the
same ``make demo`` printed 62.8x, 89.3x and 1812x). So the figures a search publishes are
measured again, together, after it:

* ``baseline``: fp32 eager at batch 1 with the default threads (what a user starts from);
* ``baseline_same_batch``: fp32 eager at the winner's batch size and threads, so the share
  of the saving that batching and threads alone give is told apart from what compression and
  the runtime add;
* ``best``: the search's winner;
* ``runner_up``: the next feasible candidate by J/item (the front's second), which takes the
  win if it is lower in these rounds: the search's own single measurements cannot separate
  candidates a few percent apart.

Each is measured in its own spawned child process (the same isolation as a trial: a fresh
allocator, pinned threads), in ``rounds`` rounds whose order rotates (A B C D, B C D A, ...),
so slow drifts of the machine fall on every candidate alike. A ratio is taken within each
round (the two figures were measured minutes apart at most) and the published ratio is the
median over rounds; each candidate's figures are its medians.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wattwise.errors import WattwiseError
from wattwise.search._objective import (
    JobContext,
    _die_with_parent,
    _failure,
    _get_model,
    _Ledger,
    _measured,
    _prepare,
    _quiet_torch,
    measure_in_job,
)
from wattwise.search._space import Candidate, SearchSpace

__all__ = ["ROLES", "ConfirmSpec", "confirm", "confirm_job", "confirm_plan"]

ROLES = ("baseline", "baseline_same_batch", "best", "runner_up")
DEFAULT_ROUNDS = 3
# The figures each round of a candidate yields; medians of these are what results.json shows.
_ROUND_FIGURES = (
    "energy_j_per_item",
    "latency_ms_p50",
    "latency_ms_p90",
    "throughput_items_per_s",
    "co2e_g_per_million_items",
)


@dataclasses.dataclass(frozen=True)
class ConfirmSpec:
    """One candidate of the confirmation.

    Attributes:
        role: one of :data:`ROLES`.
        label: what it is, in words (``fp32 eager b256 t1``).
        batch_size, threads: the deployment's (``threads=None``: every allowed core).
        candidate: the search candidate (``None`` for the two fp32 eager baselines).
        trial: the trial it came from, if any.
    """

    role: str
    label: str
    batch_size: int
    threads: int | None
    candidate: Candidate | None = None
    trial: int | None = None

    @property
    def deployment(self) -> dict[str, Any]:
        if self.candidate is not None:
            return self.candidate.deployment
        return {
            "backend": "eager",
            "precision": "fp32",
            "batch_size": self.batch_size,
            "threads": self.threads,
        }


def _eager_label(batch_size: int, threads: int | None) -> str:
    return f"fp32 eager b{batch_size}" + (f" t{threads}" if threads else "")


def confirm_plan(
    space: SearchSpace,
    best: Mapping[str, Any],
    runner_up: Mapping[str, Any] | None,
    params_of: Callable[[int], Mapping[str, Any]],
    *,
    device: str,
) -> list[ConfirmSpec]:
    """The candidates to confirm, in the first round's order.

    ``params_of(number)`` gives a trial's parameters. The same-batch baseline is left out when
    the winner runs at batch 1 on the default threads: it would be the baseline itself.
    """
    specs = [ConfirmSpec("baseline", _eager_label(1, None), 1, None)]
    cand = Candidate.from_params(space, params_of(int(best["number"])), device=device)
    if (cand.batch_size, cand.threads) != (1, None):
        specs.append(
            ConfirmSpec(
                "baseline_same_batch",
                _eager_label(cand.batch_size, cand.threads),
                cand.batch_size,
                cand.threads,
            )
        )
    specs.append(
        ConfirmSpec(
            "best", cand.label, cand.batch_size, cand.threads, cand, trial=int(best["number"])
        )
    )
    if runner_up is not None:
        other = Candidate.from_params(space, params_of(int(runner_up["number"])), device=device)
        specs.append(
            ConfirmSpec(
                "runner_up",
                other.label,
                other.batch_size,
                other.threads,
                other,
                trial=int(runner_up["number"]),
            )
        )
    return specs


def confirm_job(ctx: JobContext, spec: ConfirmSpec, max_time_s: float) -> dict[str, Any]:
    """In a child: prepare one confirmation candidate from the cache and measure it once."""
    _die_with_parent()
    if spec.threads:
        from wattwise.measure._isolate import pin_threads

        pin_threads(spec.threads)  # before anything starts threads: they inherit the affinity
    ledger = _Ledger(ctx.meter, ctx.device)
    try:
        with ledger.phase("setup"):
            task = ctx.task.load()
            _quiet_torch()
        try:
            if spec.candidate is None:
                model, _ = _get_model(ctx, task, (), ledger)
                target: Any = model
            else:
                deployed, _, _ = _prepare(ctx, task, spec.candidate, ledger)
                target = deployed.module
            m = measure_in_job(
                target,
                task,
                ctx,
                ledger,
                device=ctx.device,
                batch_size=spec.batch_size,
                threads=spec.threads,
                max_time_s=max_time_s,
            )
        except (Exception, MemoryError) as exc:
            return {**_failure(exc), "ledger": ledger.to_dict()}
        return {"ok": True, **_measured(m), "ledger": ledger.to_dict()}
    finally:
        ledger.close()


def _rotations(n: int, rounds: int) -> list[list[int]]:
    return [[(r + i) % n for i in range(n)] for r in range(rounds)]


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def confirm(
    specs: Sequence[ConfirmSpec],
    ctx: JobContext,
    *,
    rounds: int = DEFAULT_ROUNDS,
    max_time_s: float,
    timeout_s: float,
    on_measure: Callable[[int, ConfirmSpec], None] | None = None,
) -> dict[str, Any]:
    """Measure ``specs`` in ``rounds`` rotating rounds; returns the ``confirmation`` document.

    The document (results.json's ``confirmation``): ``rounds``, ``order`` (the roles of each
    round), ``candidates`` (by role: the deployment, each round's figures, their medians, the
    spread of J/item as (max − min) / median, disturbed windows summed over rounds, and the
    reason of any round that failed), ``ratios`` (``energy_ratio`` and
    ``energy_ratio_same_batch``: per round and their median), ``chosen`` (``best`` or
    ``runner_up``: which one is lower by the median of paired rounds), ``spread`` (the largest
    candidate spread) and ``ledger`` (what measuring them spent).
    """
    from wattwise.measure import run_isolated

    if rounds < 1:
        raise WattwiseError(f"confirmation rounds must be >= 1, got {rounds}")
    per_role: dict[str, list[dict[str, Any] | None]] = {s.role: [] for s in specs}
    failures: dict[str, list[str]] = {s.role: [] for s in specs}
    energy_j: dict[str, float] = {}
    source = uncertainty = None
    order = _rotations(len(specs), rounds)
    for r, idx in enumerate(order):
        for i in idx:
            spec = specs[i]
            if on_measure is not None:
                on_measure(r, spec)
            try:
                out = run_isolated(
                    confirm_job,
                    ctx,
                    spec,
                    max_time_s,
                    threads=spec.threads,
                    timeout_s=timeout_s,
                    what=f"confirmation of {spec.label}",
                    log_path=ctx.log_path("confirm"),
                )
            except WattwiseError as exc:
                out = {"ok": False, "message": " ".join(str(exc).split())[:500]}
            ledger = out.get("ledger") or {}
            for phase, joules in (ledger.get("energy_j") or {}).items():
                energy_j[phase] = energy_j.get(phase, 0.0) + float(joules)
            source = ledger.get("energy_source") or source
            uncertainty = ledger.get("energy_uncertainty", uncertainty)
            if out.get("ok"):
                per_role[spec.role].append(out)
            else:
                per_role[spec.role].append(None)
                failures[spec.role].append(f"round {r + 1}: {out.get('message')}")
    candidates = {s.role: _candidate_doc(s, per_role[s.role], failures[s.role]) for s in specs}
    chosen = _choose(per_role)
    # The published ratios are the chosen one's (the runner-up's when it won these rounds).
    reference = "baseline_same_batch" if "baseline_same_batch" in per_role else "baseline"
    winner = chosen or "best"
    ratios = {
        "energy_ratio": _paired(per_role, "baseline", winner),
        "energy_ratio_same_batch": _paired(per_role, reference, winner),
    }
    spreads = [c["spread_rel"] for c in candidates.values() if c["spread_rel"] is not None]
    return {
        "rounds": rounds,
        "order": [[specs[i].role for i in idx] for idx in order],
        "candidates": candidates,
        "ratios": ratios,
        "chosen": chosen,
        "spread": max(spreads) if spreads else None,
        "ledger": {
            "energy_j": energy_j,
            "energy_source": source,
            "energy_uncertainty": uncertainty,
        },
    }


def _candidate_doc(
    spec: ConfirmSpec, outs: Sequence[dict[str, Any] | None], failures: list[str]
) -> dict[str, Any]:
    ok = [o for o in outs if o is not None]
    doc: dict[str, Any] = {
        "label": spec.label,
        "trial": spec.trial,
        "deployment": spec.deployment,
        "rounds_measured": len(ok),
        "failures": failures,
        "energy_source": ok[0]["energy_source"] if ok else None,
        "energy_uncertainty": ok[0]["energy_uncertainty"] if ok else None,
        "disturbed_windows": sum(int(o.get("disturbed_windows") or 0) for o in ok),
        "round_figures": {
            k: [o[k] if o is not None else None for o in outs] for k in _ROUND_FIGURES
        },
    }
    for key in _ROUND_FIGURES:
        doc[key] = _median([float(o[key]) for o in ok if o.get(key) is not None])
    rounds_j = [float(o["energy_j_per_item"]) for o in ok]
    med = doc["energy_j_per_item"]
    doc["spread_rel"] = (max(rounds_j) - min(rounds_j)) / med if med and len(rounds_j) > 1 else None
    return doc


def _paired(
    per_role: Mapping[str, Sequence[dict[str, Any] | None]], num: str, den: str
) -> dict[str, Any]:
    """``num`` J/item over ``den`` J/item within each round both were measured in, and the
    median of those ratios."""
    if num not in per_role or den not in per_role:
        return {"rounds": [], "median": None}
    ratios = [
        float(a["energy_j_per_item"]) / float(b["energy_j_per_item"])
        for a, b in zip(per_role[num], per_role[den], strict=True)
        if a is not None and b is not None
    ]
    return {"rounds": ratios, "median": _median(ratios)}


def _choose(per_role: Mapping[str, Sequence[dict[str, Any] | None]]) -> str | None:
    """``best`` unless the runner-up used less energy by the median of paired rounds."""
    best_ok = any(o is not None for o in per_role.get("best", ()))
    if "runner_up" not in per_role:
        return "best" if best_ok else None
    runner_ok = any(o is not None for o in per_role["runner_up"])
    if not best_ok:
        return "runner_up" if runner_ok else None
    paired = _paired(per_role, "runner_up", "best")["median"]
    return "runner_up" if paired is not None and paired < 1.0 else "best"
