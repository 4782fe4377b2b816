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
from wattwise.results import (
    GENERATION_KEYS,
    MEASURED_KEYS,
    ROUND_KEYS,
    Confirmation,
    ConfirmedCandidate,
    Figures,
    PairedRatio,
    TrialRow,
)
from wattwise.search._objective import (
    JobContext,
    _failed,
    _get_model,
    _job,
    _prepare,
    measure_in_job,
)
from wattwise.search._space import Candidate, SearchSpace, restore_power_limits

__all__ = ["ROLES", "ConfirmSpec", "confirm", "confirm_job", "confirm_plan"]

ROLES = ("baseline", "baseline_same_batch", "best", "runner_up")
DEFAULT_ROUNDS = 3


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
    def power_limit_w(self) -> int | None:
        """The candidate's GPU power limit (the baselines run at the limit found)."""
        return self.candidate.power_limit_w if self.candidate is not None else None

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
    best: TrialRow,
    runner_up: TrialRow | None,
    params_of: Callable[[int], Mapping[str, Any]],
    *,
    device: str,
) -> list[ConfirmSpec]:
    """The candidates to confirm, in the first round's order.

    ``params_of(number)`` gives a trial's parameters. The same-batch baseline is left out when
    the winner runs at batch 1 on the default threads: it would be the baseline itself.
    """
    specs = [ConfirmSpec("baseline", _eager_label(1, None), 1, None)]
    cand = Candidate.from_params(space, params_of(best.number), device=device)
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
        ConfirmSpec("best", cand.label, cand.batch_size, cand.threads, cand, trial=best.number)
    )
    if runner_up is not None:
        other = Candidate.from_params(space, params_of(runner_up.number), device=device)
        specs.append(
            ConfirmSpec(
                "runner_up",
                other.label,
                other.batch_size,
                other.threads,
                other,
                trial=runner_up.number,
            )
        )
    return specs


def confirm_job(ctx: JobContext, spec: ConfirmSpec, max_time_s: float) -> dict[str, Any]:
    """In a child: prepare one confirmation candidate from the cache and measure it once.

    Returns ``ok`` with the measured figures flat (:data:`~wattwise.results.MEASURED_KEYS`),
    or ``ok=False`` with the reason; always the ``ledger``.
    """
    with _job(ctx, threads=spec.threads) as (task, ledger):
        try:
            if spec.candidate is None:
                model, _ = _get_model(ctx, task, (), ledger)
                target: Any = model
            else:
                deployed, _, _ = _prepare(ctx, task, spec.candidate, ledger)
                target = deployed.module
            m = measure_in_job(target, task, ctx, ledger, spec, max_time_s)
        except (Exception, MemoryError) as exc:
            return _failed(exc, ledger)
        measured = Figures.measured(m).items(MEASURED_KEYS)
        return {"ok": True, **measured, "ledger": ledger.to_dict()}


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
) -> tuple[Confirmation, dict[str, Any]]:
    """Measure ``specs`` in ``rounds`` rotating rounds.

    Returns:
        The :class:`~wattwise.results.Confirmation` (results.json's ``confirmation``: each
        candidate's round figures, their medians and spread, the paired ratios and which of
        the winner and the runner-up the rounds chose), and the ledger of what measuring
        them spent (``energy_j``, ``energy_source``, ``energy_uncertainty``).
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
            finally:
                restore_power_limits(ctx.device)
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
    candidates = {s.role: _candidate(s, per_role[s.role], failures[s.role]) for s in specs}
    chosen = _choose(per_role)
    # The published ratios are the chosen one's (the runner-up's when it won these rounds).
    reference = "baseline_same_batch" if "baseline_same_batch" in per_role else "baseline"
    winner = chosen or "best"
    ratios = {
        "energy_ratio": _paired(per_role, "baseline", winner),
        "energy_ratio_same_batch": _paired(per_role, reference, winner),
    }
    if any(o and o.get("decode_energy_j_per_token") for o in per_role.get(winner, ())):
        # A generative task's: the two phases scale differently, so each has its ratios.
        for phase in ("decode", "prefill"):
            key = f"{phase}_energy_j_per_token"
            ratios[f"{phase}_energy_ratio"] = _paired(per_role, "baseline", winner, key)
            ratios[f"{phase}_energy_ratio_same_batch"] = _paired(per_role, reference, winner, key)
    spreads = [c.spread_rel for c in candidates.values() if c.spread_rel is not None]
    doc = Confirmation(
        rounds=rounds,
        order=tuple(tuple(specs[i].role for i in idx) for idx in order),
        candidates=candidates,
        ratios={k: PairedRatio(tuple(v["rounds"]), v["median"]) for k, v in ratios.items()},
        chosen=chosen,
        spread=max(spreads) if spreads else None,
    )
    ledger_doc = {"energy_j": energy_j, "energy_source": source, "energy_uncertainty": uncertainty}
    return doc, ledger_doc


def _candidate(
    spec: ConfirmSpec, outs: Sequence[dict[str, Any] | None], failures: list[str]
) -> ConfirmedCandidate:
    """One candidate's rounds: their figures, medians and spread."""
    ok = [o for o in outs if o is not None]

    def median(key: str) -> float | None:
        return _median([float(o[key]) for o in ok if o.get(key) is not None])

    figures = Figures(
        energy_j_per_item=median("energy_j_per_item"),
        energy_source=ok[0]["energy_source"] if ok else None,
        energy_uncertainty=ok[0]["energy_uncertainty"] if ok else None,
        latency_ms_p50=median("latency_ms_p50"),
        latency_ms_p90=median("latency_ms_p90"),
        throughput_items_per_s=median("throughput_items_per_s"),
        co2e_g_per_million_items=median("co2e_g_per_million_items"),
        disturbed_windows=sum(int(o.get("disturbed_windows") or 0) for o in ok),
    )
    generation: dict[str, Any] = {k: median(k) for k in GENERATION_KEYS}
    figures = dataclasses.replace(figures, **generation)
    rounds_j = [float(o["energy_j_per_item"]) for o in ok]
    med = figures.energy_j_per_item
    return ConfirmedCandidate(
        label=spec.label,
        trial=spec.trial,
        deployment=spec.deployment,
        rounds_measured=len(ok),
        failures=tuple(failures),
        round_figures={
            k: tuple(o.get(k) if o is not None else None for o in outs)
            for k in ROUND_KEYS
            if k not in GENERATION_KEYS or any(o and o.get(k) is not None for o in outs)
        },
        figures=figures,
        spread_rel=(max(rounds_j) - min(rounds_j)) / med if med and len(rounds_j) > 1 else None,
    )


def _paired(
    per_role: Mapping[str, Sequence[dict[str, Any] | None]],
    num: str,
    den: str,
    key: str = "energy_j_per_item",
) -> dict[str, Any]:
    """``num``'s ``key`` (J/item) over ``den``'s within each round both were measured in, and
    the median of those ratios."""
    if num not in per_role or den not in per_role:
        return {"rounds": [], "median": None}
    ratios = [
        float(a[key]) / float(b[key])
        for a, b in zip(per_role[num], per_role[den], strict=True)
        if a is not None and b is not None and a.get(key) and b.get(key)
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
